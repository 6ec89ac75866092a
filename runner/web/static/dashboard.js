// The health dashboard's script (served from /static/: the CSP allows no inline script).
// Buttons post to the API, the page reloads #content every data-refresh seconds, and the
// charts are drawn by Chart.js from the JSON blocks inside #content, again after each reload.
const flash = document.getElementById('flash');
const every = Number(document.body.dataset.refresh) * 1000;
const ACCENT = '#0969da', CRITICAL = '#cf222e', MUTED = '#59636e';
function say(text) { flash.textContent = text; }

function dataOf(root, id) {
  const block = root.querySelector('#' + id);
  return block ? JSON.parse(block.textContent) : null;
}

// A point with no neighbour (a single bucket between gaps) would be invisible on a line without points.
function loneDot(ctx) {
  const d = ctx.dataset.data, i = ctx.dataIndex;
  return d[i] != null && d[i - 1] == null && d[i + 1] == null ? 3 : 0;
}

function showChart(root, canvasId, config) {
  const canvas = root.querySelector('#' + canvasId);
  canvas.parentElement.hidden = false;   // shown only once a chart will fill it (no JS: the text stays)
  return new Chart(canvas, config);
}

function drawCharts(root) {
  if (typeof Chart === 'undefined') return;  // the library did not load: the figures are on the page as text
  const common = {responsive: true, maintainAspectRatio: false, animation: false,
                  interaction: {mode: 'index', intersect: false}};
  const response = dataOf(root, 'response-data');
  if (response) {
    showChart(root, 'response-chart', {
      type: 'line',
      data: {labels: response.labels, datasets: [
        {label: 'average', data: response.avg_ms, borderColor: ACCENT, backgroundColor: ACCENT,
         borderWidth: 2, pointRadius: loneDot},
        {label: 'worst', data: response.max_ms, borderColor: ACCENT + '73', backgroundColor: ACCENT + '73',
         borderWidth: 1, borderDash: [3, 3], pointRadius: loneDot},
      ]},
      options: {...common, spanGaps: false, plugins: {legend: {display: false},
                  tooltip: {callbacks: {title: (items) => items[0].label + ' UTC',
                                        label: (item) => item.dataset.label + ': ' + (item.parsed.y == null ? '-' : item.parsed.y.toFixed(1) + ' ms')}}},
                scales: {x: {ticks: {maxTicksLimit: 9, maxRotation: 0, color: MUTED}, grid: {display: false}},
                         y: {beginAtZero: true, ticks: {callback: (v) => v + ' ms', color: MUTED}}}},
    });
  }
  const refusals = dataOf(root, 'refusals-data');
  if (refusals) {
    showChart(root, 'refusals-chart', {
      type: 'bar',
      data: {labels: refusals.labels, datasets: [
        {label: 'refused', data: refusals.refusals, backgroundColor: CRITICAL, borderRadius: 2},
      ]},
      options: {...common, plugins: {legend: {display: false},
                  tooltip: {callbacks: {
                    title: (items) => items[0].label + ' UTC',
                    footer: (items) => {
                      const i = items[0].dataIndex;
                      return refusals.errors[i] + ' errors, ' + refusals.calls[i] + ' calls';
                    }}}},
                scales: {x: {ticks: {maxRotation: 0, autoSkipPadding: 8, color: MUTED}, grid: {display: false}},
                         y: {beginAtZero: true, ticks: {precision: 0, color: MUTED}}}},
    });
  }
}

function destroyCharts(root) {
  if (typeof Chart === 'undefined') return;
  root.querySelectorAll('canvas').forEach((c) => { const chart = Chart.getChart(c); if (chart) chart.destroy(); });
}

async function reload() {
  const r = await fetch(location.pathname + location.search, {headers: {'Accept': 'text/html'}, cache: 'no-store'});
  if (!r.ok) { say('reload failed: HTTP ' + r.status); return; }
  const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
  const old = document.getElementById('content'), fresh = doc.getElementById('content');
  old.replaceWith(fresh);
  destroyCharts(old);
  drawCharts(fresh);
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
drawCharts(document.getElementById('content'));
if (every > 0) setInterval(() => reload().catch(e => say('reload failed: ' + e.message)), every);
