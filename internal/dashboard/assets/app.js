// picogate fleet dashboard. Plain JavaScript, no library. Every string that comes from the server is
// put on the page with textContent or setAttribute, never parsed as HTML: device names, user agents,
// paths and refusal reasons are controlled by devices.
'use strict';

const API = '/dashboard/api/';
const $ = (id) => document.getElementById(id);

// el builds an element; string children become text nodes.
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// Server time: ages are computed on the gateway's clock, not the browser's.
let clockOffset = 0;
const serverNow = () => Date.now() + clockOffset;

function age(ms) {
  if (!ms) return '—';
  let s = Math.max(0, Math.round((serverNow() - ms) / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor(s % 3600 / 60)).padStart(2, '0') + 'm';
  return Math.floor(s / 86400) + 'd';
}

const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '—');

// Only these values become class names; anything else is shown but not styled.
const statusClass = { active: 'ok', revoked: 'bad', pending: 'warn', approved: 'warn', anonymous: 'muted' };
const readyClass = { True: 'ok', False: 'bad', Unknown: 'bad', '': 'muted' };
const phaseNames = ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'];
let classNames = ['ok', 'auth', 'policy', 'source', 'rate-limit', 'overload', 'upstream', 'api-4xx', 'api-5xx'];

function readyText(r) { return r === '' ? 'no Node' : r === 'True' ? 'Ready' : 'NotReady (' + r + ')'; }

function errorsText(counts) {
  const parts = [];
  counts.forEach((n, i) => { if (i > 0 && n > 0) parts.push(classNames[i] + ' ' + n); });
  return parts.join(' · ') || '—';
}

function podsText(p) {
  const parts = [];
  p.forEach((n, i) => { if (n > 0) parts.push(n + ' ' + phaseNames[i]); });
  return parts.join(', ') || '—';
}

// ---------------------------------------------------------------- fleet table

const columns = [
  { key: 'name', label: 'Name', sort: 'name' },
  { key: 'auth', label: 'Auth' },
  { key: 'status', label: 'Status', sort: 'status' },
  { key: 'ready', label: 'Node', sort: 'ready' },
  { key: 'lease', label: 'Lease age', sort: 'lease' },
  { key: 'seen', label: 'Last seen', sort: 'seen' },
  { key: 'client', label: 'Source' },
  { key: 'ua', label: 'User agent' },
  { key: 'rate', label: 'Req/min', sort: 'rate' },
  { key: 'errors', label: 'Errors and refusals', sort: 'refusals' },
  { key: 'lastRefusal', label: 'Last refusal' },
  { key: 'limited', label: 'Rate-limited' },
  { key: 'pods', label: 'Pods' },
];

const view = { prefix: '', status: '', quiet: '', quietAfter: 30, sort: 'name', desc: false, offset: 0, limit: 100 };
const rows = new Map();   // name → row (last received)
const trs = new Map();    // name → <tr>
let order = [];
let matched = 0;
let source = null;

function params() {
  const p = new URLSearchParams();
  if (view.prefix) p.set('prefix', view.prefix);
  if (view.status) p.set('status', view.status);
  if (view.quiet) p.set('quiet', view.quiet);
  p.set('qa', view.quietAfter);
  p.set('sort', view.sort);
  if (view.desc) p.set('desc', '1');
  p.set('offset', view.offset);
  p.set('limit', view.limit);
  return p;
}

function connect() {
  if (source) source.close();
  source = new EventSource(API + 'stream?' + params());
  setConn('connecting…', 'muted');
  source.addEventListener('fleet', (ev) => { applyDelta(JSON.parse(ev.data)); setConn('live', 'ok'); });
  source.onerror = () => setConn('reconnecting…', 'bad');
}

function setConn(text, cls) {
  const c = $('conn');
  c.textContent = text;
  c.className = 'conn ' + cls;
}

function applyDelta(d) {
  clockOffset = d.now - Date.now();
  if (d.full) {
    rows.clear();
    for (const tr of trs.values()) tr.remove();
    trs.clear();
    if (d.classes) classNames = d.classes;
  }
  for (const r of d.rows || []) {
    rows.set(r.name, r);
    let tr = trs.get(r.name);
    if (!tr) {
      tr = newRow(r.name);
      trs.set(r.name, tr);
    }
    fillRow(tr, r);
  }
  if (d.order) {
    order = d.order;
    const keep = new Set(order);
    for (const [name, tr] of trs) {
      if (!keep.has(name)) { tr.remove(); trs.delete(name); rows.delete(name); }
    }
    const body = $('fleet-body');
    order.forEach((name, i) => {
      const tr = trs.get(name);
      if (tr && body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    });
  }
  matched = d.matched;
  renderSummary(d.summary);
  renderRange();
  const k = $('kube');
  k.hidden = !d.kube;
  k.textContent = d.kube || '';
  tickAges();
}

function newRow(name) {
  const tr = el('tr', { 'data-name': name });
  for (const c of columns) {
    const td = el('td', { 'data-col': c.key });
    if (c.key === 'name') td.append(el('a', { href: '#/device/' + encodeURIComponent(name), text: name }));
    tr.append(td);
  }
  return tr;
}

function cell(tr, key) { return tr.querySelector('td[data-col="' + key + '"]'); }

function setCell(tr, key, text, cls) {
  const td = cell(tr, key);
  if (td.textContent !== text) td.textContent = text;
  td.className = cls || '';
}

function fillRow(tr, r) {
  tr.setAttribute('data-status', r.status);
  tr.setAttribute('data-ready', r.ready);
  setCell(tr, 'auth', r.auth);
  setCell(tr, 'status', r.status, statusClass[r.status]);
  setCell(tr, 'ready', readyText(r.ready), readyClass[r.ready]);
  setCell(tr, 'client', r.client || '—');
  setCell(tr, 'ua', r.userAgent || '—', 'wrap');
  setCell(tr, 'rate', String(r.perMinute));
  setCell(tr, 'errors', errorsText(r.classes));
  setCell(tr, 'lastRefusal', r.lastRefusal ? r.lastRefusal + (r.lastRule ? ' [' + r.lastRule + ']' : '') : '—', 'wrap');
  setCell(tr, 'limited', String(r.rateLimited), r.rateLimited ? 'warn' : '');
  setCell(tr, 'pods', podsText(r.pods));
}

// tickAges refreshes the columns that move with the clock alone.
function tickAges() {
  const quietMs = view.quietAfter * 1000;
  for (const [name, tr] of trs) {
    const r = rows.get(name);
    if (!r) continue;
    const quiet = !r.lastSeen || serverNow() - r.lastSeen > quietMs;
    tr.setAttribute('data-quiet', quiet ? 'true' : 'false');
    setCell(tr, 'seen', r.lastSeen ? age(r.lastSeen) + ' ago' + (quiet ? ' · quiet' : '') : 'never', quiet ? 'warn' : '');
    setCell(tr, 'lease', r.leaseRenew ? age(r.leaseRenew) : '—');
  }
}

function renderSummary(s) {
  const cards = [
    ['devices', s.devices, ''], ['Ready', s.ready, 'ok'], ['not Ready', s.notReady, s.notReady ? 'bad' : ''],
    ['no Node', s.noNode, ''], ['quiet', s.quiet, s.quiet ? 'warn' : ''], ['revoked', s.revoked, ''],
    ['pending approval', s.pending, s.pending ? 'warn' : ''], ['with refusals', s.refused, s.refused ? 'warn' : ''],
    ['anonymous requests', s.anonymous, ''],
  ];
  const box = $('summary');
  box.replaceChildren(...cards.map(([label, n, cls]) => {
    const card = el('div', { class: 'card ' + cls }, el('b', { text: String(n) }), el('span', { text: label }));
    if (label === 'anonymous requests') {
      card.replaceChildren(el('b', { text: String(n) }), el('a', { href: '#/anonymous', text: label }));
    }
    return card;
  }));
}

function renderRange() {
  const from = matched ? view.offset + 1 : 0;
  const to = Math.min(view.offset + view.limit, matched);
  $('range').textContent = from + '–' + to + ' of ' + matched;
  $('prev').disabled = view.offset === 0;
  $('next').disabled = view.offset + view.limit >= matched;
}

function renderHead() {
  $('fleet-head').replaceChildren(...columns.map((c) => {
    if (!c.sort) return el('th', { text: c.label });
    const mark = view.sort === c.sort ? (view.desc ? ' ▼' : ' ▲') : '';
    const b = el('button', { type: 'button', text: c.label + mark, 'data-sort': c.sort });
    b.addEventListener('click', () => {
      view.desc = view.sort === c.sort ? !view.desc : c.sort !== 'name';
      view.sort = c.sort;
      view.offset = 0;
      renderHead();
      connect();
    });
    return el('th', {}, b);
  }));
}

let filterTimer = 0;
function onFilter() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    view.prefix = $('f-prefix').value.trim();
    view.status = $('f-status').value;
    view.quiet = $('f-quiet').value;
    view.quietAfter = Math.max(1, Number($('f-quiet-after').value) || 30);
    view.limit = Number($('f-limit').value);
    view.offset = 0;
    connect();
  }, 250);
}

// ---------------------------------------------------------------- charts (canvas, drawn by hand)

const chartColors = ['#2e7d32', '#1565c0', '#ef6c00', '#c62828'];

function drawChart(canvas, series, points, fmt) {
  const ctx = canvas.getContext('2d');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  let max = 0;
  let integers = true;
  for (const s of series) for (const p of points) { const v = s.value(p); max = Math.max(max, v); integers = integers && Number.isInteger(v); }
  max = max <= 0 ? 1 : integers ? Math.ceil(max * 1.1) : max * 1.1;
  const x = (i) => pad.l + (points.length < 2 ? 0 : i * (w - pad.l - pad.r) / (points.length - 1));
  const y = (v) => h - pad.b - v / max * (h - pad.t - pad.b);
  ctx.strokeStyle = '#ccc';
  ctx.fillStyle = '#666';
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    ctx.beginPath(); ctx.moveTo(pad.l, y(v) + 0.5); ctx.lineTo(w - pad.r, y(v) + 0.5); ctx.stroke();
    ctx.fillText(fmt(v), 2, y(v) + 4);
  }
  if (points.length) {
    ctx.fillText(new Date(points[0].t).toLocaleTimeString(), pad.l, h - 4);
    const last = new Date(points[points.length - 1].t).toLocaleTimeString();
    ctx.fillText(last, w - pad.r - ctx.measureText(last).width, h - 4);
  } else {
    ctx.fillText('no data yet: one point per interval', pad.l + 8, h / 2);
  }
  series.forEach((s) => {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach((p, i) => { const v = s.value(p); if (i === 0) ctx.moveTo(x(i), y(v)); else ctx.lineTo(x(i), y(v)); });
    ctx.stroke();
  });
}

function legend(id, items) {
  $(id).replaceChildren(...items.map(([label, color]) => {
    const sw = el('i', { class: 'swatch' });
    sw.style.background = color;
    return el('span', {}, sw, label);
  }));
}

async function refreshCharts() {
  try {
    const res = await fetch(API + 'charts', { cache: 'no-store' });
    if (!res.ok) return;
    const c = await res.json();
    const pts = c.points;
    const num = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
    drawChart($('chart-rps'), ['2xx', '3xx', '4xx', '5xx'].map((_, i) => ({ color: chartColors[i], value: (p) => p.rps[i] })), pts, num);
    drawChart($('chart-p99'), [{ color: '#6a1b9a', value: (p) => p.p99 }], pts, num);
    const count = (v) => (Number.isInteger(v) || v >= 10 ? v.toFixed(0) : v.toFixed(1));
    drawChart($('chart-upstream'), [{ color: '#c62828', value: (p) => p.upstream }], pts, count);
    const known = pts.filter((p) => p.nodes >= 0);
    drawChart($('chart-ready'), [{ color: '#999', value: (p) => p.nodes }, { color: '#2e7d32', value: (p) => p.ready }], known, count);
  } catch (e) { /* the stream's status shows connectivity */ }
}

// ---------------------------------------------------------------- device page

let deviceTimer = 0;

function route() {
  clearInterval(deviceTimer);
  const h = location.hash;
  const dev = h.startsWith('#/device/') ? decodeURIComponent(h.slice('#/device/'.length)) : null;
  const anon = h === '#/anonymous';
  $('fleet-view').hidden = !!(dev || anon);
  $('device-view').hidden = !(dev || anon);
  if (dev || anon) {
    const url = anon ? API + 'anonymous' : API + 'device/' + encodeURIComponent(dev);
    const load = () => loadDevice(url, dev);
    load();
    deviceTimer = setInterval(load, 1000);
  }
}

async function loadDevice(url, name) {
  let v;
  try {
    const res = await fetch(url, { cache: 'no-store' });
    if (res.status === 404) {
      $('d-name').textContent = name + ': no such device';
      return;
    }
    v = await res.json();
  } catch (e) { return; }
  clockOffset = v.now - Date.now();
  const r = v.row;
  $('d-name').textContent = name === null ? 'Requests without a device identity' : r.name;
  const props = [
    ['status', r.status], ['auth', r.auth || '—'], ['allowed source', v.source || '—'],
    ['Node', name === null ? '—' : readyText(r.ready)], ['Lease age', r.leaseRenew ? age(r.leaseRenew) : '—'],
    ['firmware', r.firmware || '—'], ['board', r.board || '—'], ['Node address', v.address || '—'],
    ['hardware id', v.hardwareId || '—'], ['created', v.created ? new Date(v.created).toLocaleString() : '—'],
    ['revoked', v.revoked ? new Date(v.revoked).toLocaleString() : '—'],
    ['last seen', r.lastSeen ? age(r.lastSeen) + ' ago' : 'never'], ['source address', r.client || '—'],
    ['user agent', r.userAgent || '—'], ['requests', String(r.requests)], ['last minute', String(r.perMinute)],
    ['errors and refusals', errorsText(r.classes)], ['rate-limited', String(r.rateLimited)], ['pods', podsText(r.pods)],
  ];
  $('d-props').replaceChildren(...props.flatMap(([k, val]) => [el('dt', { text: k }), el('dd', { text: val, 'data-prop': k })]));
  $('d-props').setAttribute('data-status', r.status);
  $('d-commands').textContent = v.commands.join('\n');
  const tbody = (id) => $(id).querySelector('tbody');
  tbody('d-conditions').replaceChildren(...v.conditions.map((c) => el('tr', {},
    el('td', { text: c.type }), el('td', { text: c.status, class: c.type === 'Ready' ? readyClass[c.status] || '' : '' }),
    el('td', { text: c.reason || '' }), el('td', { text: c.message || '', class: 'wrap' }),
    el('td', { text: c.heartbeat ? age(c.heartbeat) + ' ago' : '—' }), el('td', { text: c.transition ? age(c.transition) + ' ago' : '—' }))));
  tbody('d-pods').replaceChildren(...v.pods.map((p) => el('tr', {}, el('td', { text: p.namespace }), el('td', { text: p.name }), el('td', { text: p.phase }))));
  tbody('d-refusals').replaceChildren(...v.refusals.map((q) => el('tr', {},
    el('td', { text: time(q.at) }), el('td', { text: q.method }), el('td', { text: q.path, class: 'wrap' }), el('td', { text: String(q.status) }),
    el('td', { text: q.rule }), el('td', { text: q.class }), el('td', { text: q.reason || '', class: 'wrap' }))));
  tbody('d-requests').replaceChildren(...v.requests.map((q) => el('tr', {},
    el('td', { text: time(q.at) }), el('td', { text: q.method }), el('td', { text: q.path + (q.watch ? ' (watch)' : ''), class: 'wrap' }),
    el('td', { text: String(q.status) }), el('td', { text: q.ms.toFixed(1) }), el('td', { text: q.rule }), el('td', { text: q.class }))));
  $('d-ref-note').textContent = '(the last ' + v.ringRefusals + ' kept)';
  $('d-req-note').textContent = '(the last ' + v.ringRequests + ' kept)';
}

// ---------------------------------------------------------------- start

function start() {
  renderHead();
  for (const id of ['f-prefix', 'f-quiet', 'f-quiet-after']) $(id).addEventListener('input', onFilter);
  for (const id of ['f-status', 'f-limit']) $(id).addEventListener('change', onFilter);
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('prev').addEventListener('click', () => { view.offset = Math.max(0, view.offset - view.limit); connect(); });
  $('next').addEventListener('click', () => { view.offset += view.limit; connect(); });
  legend('legend-rps', ['2xx', '3xx', '4xx', '5xx'].map((l, i) => [l, chartColors[i]]));
  legend('legend-ready', [['Ready', '#2e7d32'], ['Nodes', '#999']]);
  window.addEventListener('hashchange', route);
  route();
  connect();
  refreshCharts();
  setInterval(refreshCharts, 10000);
  setInterval(tickAges, 1000);
}

start();
