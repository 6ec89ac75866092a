const flash = document.getElementById('flash');
const every = Number(document.body.dataset.refresh) * 1000;
function say(text) { flash.textContent = text; }
async function reload() {
  const r = await fetch(location.pathname + location.search, {headers: {'Accept': 'text/html'}, cache: 'no-store'});
  if (!r.ok) { say('reload failed: HTTP ' + r.status); return; }
  const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
  document.getElementById('content').replaceWith(doc.getElementById('content'));
  document.title = doc.title;
}
async function post(url) {
  const r = await fetch(url, {method: 'POST', headers: {'X-Smsao-Dashboard': '1'}});
  let body = {}; try { body = await r.json(); } catch (e) {}
  if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
  return body;
}
document.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button[data-action]');
  if (!btn) return;
  btn.disabled = true;
  try {
    if (btn.dataset.action === 'refresh') {
      say('running health check…');
      await post('/api/refresh');
      say('health check done');
    } else if (btn.dataset.action === 'ack') {
      await post('/api/alerts/' + btn.dataset.id + '/acknowledge');
      say('alert ' + btn.dataset.id + ' acknowledged');
    }
    await reload();
  } catch (e) { say('failed: ' + e.message); }
  finally { btn.disabled = false; }
});
if (every > 0) setInterval(() => reload().catch(e => say('reload failed: ' + e.message)), every);
