// Draws the Business page's charts from the figures embedded in the page (no extra request).
// Served from /static/ with Chart.js: the CSP admits no inline script.
(function () {
  const data = JSON.parse(document.getElementById("business-data").textContent);
  const labels = data.months.map((m) => m.month.slice(0, 7));
  const common = { responsive: true, maintainAspectRatio: false, animation: false,
                   interaction: { mode: "index", intersect: false } };
  new Chart(document.getElementById("revenue-chart"), {
    type: "bar",
    data: { labels, datasets: [
      { label: "Revenue", data: data.months.map((m) => m.revenue), backgroundColor: "#1f6feb" },
      { label: "MRR", data: data.months.map((m) => m.mrr), type: "line", borderColor: "#1a7f37",
        backgroundColor: "#1a7f37" },
    ] },
    options: common,
  });
  new Chart(document.getElementById("customers-chart"), {
    type: "line",
    data: { labels, datasets: [
      { label: "Paying", data: data.months.map((m) => m.paying_customers), borderColor: "#1f6feb" },
      { label: "New", data: data.months.map((m) => m.new_paying_customers), borderColor: "#1a7f37" },
      { label: "Churned", data: data.months.map((m) => m.churned_customers), borderColor: "#cf222e" },
    ] },
    options: common,
  });
})();
