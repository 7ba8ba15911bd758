// keelfs dashboard: polls /api/cluster every second and redraws (keelfs.web.dashboard).
"use strict";

const POLL_MS = 1000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function orDash(v) { return v === null || v === undefined ? "\u2013" : v; }

function groupCard(g) {
  const leader = g.leader === null
    ? el("span", { class: "noleader", id: `${g.id}-leader`, "data-leader": "" }, "no leader")
    : el("span", { class: "leader", id: `${g.id}-leader`, "data-leader": String(g.leader) },
         `n${g.leader}`);
  const rows = g.members.map((m) => el("tr", { "data-node": String(m.id) },
    el("td", {}, `n${m.id}`),
    el("td", { class: m.up ? (m.state === "leader" ? "leader" : "") : "down" }, m.state),
    el("td", {}, orDash(m.term)),
    el("td", {}, orDash(m.commit)),
    el("td", {}, orDash(m.applied)),
    el("td", {}, orDash(m.lag))));
  return el("div", { class: "group", id: `group-${g.id}` },
    el("h3", {}, `${g.id} \u2014 leader `, leader, `, term ${g.term}, commit ${g.commit}`),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["member", "state", "term", "commit", "applied", "lag"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
}

function fillTable(id, rows) {
  document.querySelector(`#${id} tbody`).replaceChildren(...rows);
}

function render(view) {
  document.getElementById("served-by").textContent =
    `served by n${view.served_by}, map v${view.map_version}`;
  document.getElementById("groups").replaceChildren(...view.groups.map(groupCard));
  fillTable("nodes", view.nodes.map((n) => el("tr", {},
    el("td", {}, `n${n.id}`), el("td", {}, n.address),
    el("td", { class: n.up ? "" : "down" }, n.up ? "up" : "unreachable"),
    el("td", {}, n.groups.join(", ")))));
  fillTable("chunk-servers", view.chunk_servers.map((c) => {
    const pct = c.capacity ? Math.min(100, (100 * c.used) / c.capacity) : 0;
    const fill = el("span");
    fill.style.width = `${pct}%`;
    const bar = el("span", { class: "bar", title: `${pct.toFixed(1)}%` }, fill);
    const age = c.last_heartbeat_s_ago;
    return el("tr", {},
      el("td", {}, c.id), el("td", {}, c.address), el("td", {}, c.rack),
      el("td", { class: c.live ? "" : "down" }, c.live ? "live" : "dead"),
      el("td", {}, bar, `${bytes(c.used)} / ${bytes(c.capacity)}`),
      el("td", {}, age === undefined ? "\u2013" : `${age.toFixed(1)} s ago`));
  }));
  fillTable("blocks", view.blocks.map((b) => {
    // block health is reported by a shard's leader, per shard, as of its last walk
    const health = Object.values(b.health || {});
    const total = (k) => (health.length ? health.reduce((n, h) => n + (h[k] || 0), 0) : null);
    const under = total("under_replicated");
    const missing = total("missing");
    return el("tr", {},
      el("td", {}, `n${b.node}`), el("td", {}, b.shards.join(", ")), el("td", {}, b.blocks),
      el("td", { class: under ? "down" : "" }, orDash(under)),
      el("td", { class: missing ? "down" : "" }, orDash(missing)),
      ...["replications", "deletions", "orphans", "recovered"]
        .map((k) => el("td", {}, orDash(b.replication[k]))));
  }));
}

async function poll() {
  const updated = document.getElementById("updated");
  try {
    const reply = await fetch("/api/cluster", { cache: "no-store" });
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    render(await reply.json());
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.className = "muted";
  } catch (err) {
    updated.textContent = `update failed: ${err.message}`;
    updated.className = "stale";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
