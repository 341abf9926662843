// Sorting the index: each column header is a button; a second press reverses the order.
(() => {
  "use strict";
  const table = document.getElementById("files");
  if (!table) return;
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, column) => {
    const button = th.querySelector("button.sort");
    if (!button) return;
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((other) => other.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = th.dataset.type === "number";
      const key = (row) => {
        const value = row.cells[column].dataset.value ?? row.cells[column].textContent;
        return numeric ? (value === "" ? -Infinity : Number(value)) : value.toLowerCase();
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const ka = key(a), kb = key(b);
        const order = ka < kb ? -1 : ka > kb ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
})();
