/* meshnode status page: keeps the server-rendered page live.
 *
 * Polls this node's JSON API (nothing else: the Content-Security-Policy
 * allows no other origin) every 2 s, redraws what changed, draws the mesh
 * map and the usage charts as SVG. Hand-written, no build step, no
 * libraries. Every text goes in through textContent, never as HTML. */
(function () {
  'use strict';

  const POLL_MS = 2000;
  const HIDDEN_POLL_MS = 15000;   // a background tab costs the router little
  const CATALOG_EVERY = 30;       // ticks; sooner when the store changes
  const CATALOG_MIN = 5;
  const REPORT_EVERY = 5;         // the hour being counted moves
  const ME_EVERY = 5;
  const LIVE_SAMPLES = 60;        // 2 min of 2 s samples
  const MAX_ROWS = 500;
  const NS = 'http://www.w3.org/2000/svg';   // a namespace name, never fetched

  const MODES = {
    'online': ['Online', 'This node reaches the internet through its own uplink.'],
    'mesh-only': ['Mesh only', 'No internet uplink here: content comes from this node and the mesh.'],
    'rf-only': ['Radio only', 'No internet and no IP peers: only stations heard on radio.'],
  };
  const PRIORITY = { 1: 'essential', 2: 'popular', 3: 'standard', 4: 'personal' };
  const SOURCES = [
    ['from_store', 's-store', "this node's store"],
    ['from_mesh', 's-mesh', 'the mesh'],
    ['from_internet', 's-internet', 'the internet'],
    ['from_rf', 's-rf', 'radio'],
    ['other', 's-other', 'not found / other'],
  ];

  const $ = (id) => document.getElementById(id);
  const state = {
    tick: 0, fails: 0, busy: false, timer: 0, status: null, prevHttp: null, samples: [],
    catalog: null, catalogKey: '', catalogTick: -1000, peersKey: '', topoKey: '', topo: null, report: null,
  };

  /* ---------- small helpers ---------- */

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    return fillEl(e, attrs, kids);
  }
  function sv(tag, attrs, ...kids) {
    const e = document.createElementNS(NS, tag);
    return fillEl(e, attrs, kids);
  }
  function fillEl(e, attrs, kids) {
    for (const k in attrs || {}) {
      if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    }
    for (const k of kids) {
      if (k !== null && k !== undefined) e.append(typeof k === 'string' ? document.createTextNode(k) : k);
    }
    return e;
  }
  function setText(id, text) {
    const e = $(id);
    if (e && e.textContent !== text) e.textContent = text;
  }
  function num(n) { return Number(n || 0).toLocaleString('en'); }
  function bytes(n) {
    n = Number(n || 0);
    if (n < 1024) return Math.round(n) + ' B';
    const u = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
    return (n < 10 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
  }
  function rate(bps) {
    bps = Number(bps || 0);
    if (bps < 1e3) return bps + ' bit/s';
    if (bps < 1e6) return Math.round(bps / 1e3) + ' kbit/s';
    if (bps < 1e9) return (bps / 1e6).toFixed(1) + ' Mbit/s';
    return (bps / 1e9).toFixed(1) + ' Gbit/s';
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }
  function ago(ms) { return duration((Date.now() - ms) / 1000); }
  function clock(ms) {
    return new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }
  function plural(n, word) { return num(n) + ' ' + word + (n === 1 ? '' : 's'); }

  async function getJSON(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const r = await fetch(url, { signal: ctl.signal, cache: 'no-store', headers: { Accept: 'application/json' } });
      let data = null;
      try { data = await r.json(); } catch (_) { data = null; }
      return { status: r.status, ok: r.ok, data: data };
    } finally {
      clearTimeout(timer);
    }
  }

  /* ---------- status: mode, station, shaping ---------- */

  function renderStatus(st) {
    const mode = MODES[st.mode] ? st.mode : 'mesh-only';
    const box = $('mode');
    if (box.dataset.mode !== st.mode) box.dataset.mode = st.mode;
    box.dataset.since = String(st.mode_since);
    setText('mode-text', MODES[mode][0]);
    const c = st.connectivity || {};
    const gw = c.gateway;
    let detail = MODES[mode][1];
    if (mode !== 'online' && gw) {
      detail = 'No uplink of its own: internet traffic goes through ' + (gw.name || 'a mesh node') + '.';
    }
    setText('mode-detail', detail);
    setText('mode-since', ago(st.mode_since) + ' ago (' + clock(st.mode_since) + ')');
    setText('uplink', uplinkText(c.uplink || {}));
    setText('gateway', gatewayText(st));

    setText('node-name', st.node);
    if (document.title !== st.node + ' · meshnode') document.title = st.node + ' · meshnode';
    const lic = st.licence || { callsign: st.callsign, state: 'declared' };
    setText('callsign', lic.callsign);
    $('licence').dataset.state = lic.state;
    setText('licence-text', lic.state === 'declared' ? 'declared, no certificate checked'
      : lic.state === 'verified' ? 'verified' : 'not verified');
    setText('version', st.version);
    setText('uptime', duration(st.uptime_s));

    const s = st.store;
    const storeText = plural(s.entries, 'item') + ', ' + bytes(s.used_bytes) + ' of ' + bytes(s.max_bytes)
      + (s.quarantined ? ', ' + s.quarantined + ' quarantined' : '');
    setText('store-text', storeText);
    const m = $('store-meter');
    m.max = Math.max(1, s.max_bytes);
    m.high = Math.floor(s.max_bytes * 0.9);
    m.value = s.used_bytes;
    m.textContent = storeText;
    const mesh = st.mesh;
    setText('mesh-records', plural(mesh.records, 'record') + ', ' + plural(mesh.peers, 'peer')
      + ' (' + num(mesh.neighbours) + ' neighbour' + (mesh.neighbours === 1 ? '' : 's') + ')');

    renderShaping(st.shaping);
    renderRf(st.rf);
  }

  function uplinkText(u) {
    if (!u.probed) return 'not probed (no probes configured)';
    if (u.up) {
      const ms = (u.probes || []).filter((p) => p.ok && p.ms !== null).map((p) => p.ms);
      return ms.length ? 'up (' + Math.round(Math.min(...ms)) + ' ms)' : 'up';
    }
    if (!u.checked_ms) return 'checking…';
    const err = (u.probes || []).map((p) => p.error).find(Boolean);
    return 'down (' + plural(u.failures, 'failed round') + ')' + (err ? ': ' + err : '');
  }

  function gatewayText(st) {
    const c = st.connectivity || {};
    if (c.gateway) {
      return 'via ' + (c.gateway.name || 'unnamed node') + ' (' + c.gateway.addr + ')'
        + (c.gateway.installed ? '' : ', installing');
    }
    if (st.mode === 'online') return 'not needed';
    if (c.failover_off) return 'failover off: ' + c.failover_off;
    return 'none reachable';
  }

  function renderRf(rf) {
    if (!rf) return;
    let kind, text;
    if (!rf.enabled) {
      kind = 'off';
      text = 'Packet radio is off on this node ([rf] enabled = false).';
    } else if (!rf.connected) {
      kind = 'failed';
      text = 'The radio (TNC) is not connected: ' + (rf.reason || 'connecting') + '.';
    } else {
      kind = 'active';
      text = 'On the air as ' + (rf.callsign || '?') + ' at ' + rf.bitrate + ' bit/s; '
        + plural(rf.stations.length, 'station') + ' heard.';
    }
    $('rf-state').dataset.state = kind;
    setText('rf-state', text);
    const facts = rf.enabled ? [
      ['Background airtime', (rf.airtime.background_share * 100).toFixed(1) + ' % of '
        + (rf.airtime.background_budget * 100).toFixed(0) + ' % allowed'],
      ['Stations', rf.stations.map((s) => s.callsign).join(', ')],
    ].concat((rf.transfers || []).map((t) => ['Fetching', t.url + ' via ' + t.via + ': '
      + bytes(t.bytes) + (t.total == null ? '' : ' of ' + bytes(t.total))])) : [];
    const key = JSON.stringify(facts);
    const dl = $('rf-facts');
    if (dl.dataset.key !== key) {
      dl.dataset.key = key;
      dl.replaceChildren(...facts.map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, v))));
    }
  }

  function renderShaping(sh) {
    if (!sh) return;
    const p = $('shaping-state');
    let kind, text;
    if (sh.active) {
      kind = 'active';
      text = 'Fair sharing is on: ' + plural(sh.clients, 'client') + ' share '
        + rate(sh.downlink_bps) + ' down and ' + rate(sh.uplink_bps) + ' up.';
    } else if (sh.enabled) {
      kind = 'failed';
      text = 'Fair sharing is configured but not running: ' + (sh.reason || 'starting') + '.';
    } else {
      kind = 'off';
      text = 'Fair sharing is off on this node ([shaping] enabled = false).';
    }
    p.dataset.state = kind;
    setText('shaping-state', text);
    const facts = sh.active ? [
      ['Download now', rate(sh.down_shaped_bps)],
      ['Upload now', rate(sh.up_shaped_bps)],
      ['Congestion', sh.congested ? 'yes' : 'no'],
      ['Over quota', plural(sh.throttled, 'client')],
    ] : [];
    const key = JSON.stringify(facts);
    const dl = $('shaping-facts');
    if (dl.dataset.key !== key) {
      dl.dataset.key = key;
      dl.replaceChildren(...facts.map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, v))));
    }
  }

  async function loadMe() {
    const box = $('me');
    const sh = state.status && state.status.shaping;
    if (sh && !sh.enabled) {
      // nothing is counted: do not ask (and log a 404) every few seconds
      if (box.dataset.off !== '1') {
        box.dataset.off = '1';
        box.replaceChildren(el('p', { class: 'empty' }, 'Not counted: fair sharing is off on this node.'));
      }
      return;
    }
    box.dataset.off = '';
    let r;
    try { r = await getJSON('/api/v1/clients/me'); } catch (_) { return; }
    const shaping = state.status && state.status.shaping;
    if (r.status === 200 && r.data) {
      const c = r.data;
      const u = c.usage || {};
      const q = c.quota || {};
      const rows = [
        ['Address', c.ip],
        ['Today', bytes(u.day) + ' (↓ ' + bytes(u.day_down) + ', ↑ ' + bytes(u.day_up) + ')'],
        ['This month', bytes(u.month)],
      ];
      if (q.daily || q.monthly) {
        rows.push(['Quota', [q.daily ? bytes(q.daily) + ' a day' : null,
          q.monthly ? bytes(q.monthly) + ' a month' : null].filter(Boolean).join(', ')]);
      }
      if (c.remaining !== null && c.remaining !== undefined) rows.push(['Left', bytes(c.remaining)]);
      rows.push(['Share now', '↓ ' + rate(c.share_down_bps) + ' (up to ' + rate(c.ceil_down_bps) + '), ↑ '
        + rate(c.share_up_bps)]);
      rows.push(['Using now', '↓ ' + rate(c.rate_down_bps) + ', ↑ ' + rate(c.rate_up_bps)]);
      if (c.throttled) rows.push(['Status', 'over quota: slowed until the period ends']);
      const dl = el('dl', { class: 'facts' }, ...rows.map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, v))));
      const limit = q.daily || q.monthly;
      if (limit && c.remaining !== null && c.remaining !== undefined) {
        const m = el('meter', { min: '0', max: String(limit), value: String(limit - c.remaining),
          high: String(Math.floor(limit * 0.9)), class: 'quota', 'aria-label': 'Quota used' });
        box.replaceChildren(dl, m);
      } else {
        box.replaceChildren(dl);
      }
    } else if (r.status === 403) {
      box.replaceChildren(el('p', { class: 'empty' }, "Usage is shown to devices on the mesh's own networks only."));
    } else if (r.status === 404) {
      box.replaceChildren(el('p', { class: 'empty' }, shaping && !shaping.active
        ? 'Not counted: fair sharing is not running.'
        : 'No usage on record for this device yet.'));
    }
  }

  /* ---------- peers ---------- */

  function byName(a, b) {
    return (a.name || '').localeCompare(b.name || '') || String(a.node_id || a.id).localeCompare(String(b.node_id || b.id));
  }

  function renderPeers(body, topo) {
    const modes = {};
    for (const n of (topo && topo.nodes) || []) modes[n.id] = n.mode;
    const list = body.peers.slice().sort((a, b) => (b.neighbour - a.neighbour) || byName(a, b));
    const now = Date.now();
    const rows = list.map((p) => {
      const meta = [];
      if (p.rtt_ms !== null && p.rtt_ms !== undefined) meta.push('RTT ' + p.rtt_ms.toFixed(1) + ' ms');
      meta.push(plural(p.catalog.entries, 'item'));
      meta.push('seen ' + duration((now - p.last_seen) / 1000) + ' ago');
      return { p: p, mode: modes[p.node_id] || null, meta: meta.join(' · ') };
    });
    // redraw only on change: the list may be scrolled or read by a screen reader
    const key = JSON.stringify(rows.map((r) => [r.p.node_id, r.p.name, r.p.neighbour, r.mode, r.meta]));
    setText('peer-count', String(body.total));
    if (key === state.peersKey) return;
    state.peersKey = key;
    const ul = $('peers');
    if (!rows.length) {
      ul.replaceChildren(el('li', { class: 'empty' }, 'No peers yet.'));
      return;
    }
    ul.replaceChildren(...rows.map((r) => {
      const name = r.p.name || r.p.node_id.slice(0, 8);
      return el('li', { class: 'peer', 'data-node-id': r.p.node_id, 'data-name': name },
        el('span', { class: 'peer-name' }, name), ' ',
        el('span', { class: r.p.neighbour ? 'tag tag-on' : 'tag' }, r.p.neighbour ? 'neighbour' : 'via mesh'), ' ',
        r.mode ? el('span', { class: 'tag', 'data-mode': r.mode }, r.mode) : null, ' ',
        el('span', { class: 'peer-meta' }, r.meta));
    }));
  }

  /* ---------- the mesh map ---------- */

  function linkQuality(l) {
    if (l.loss > 0.1 || l.quality < 0.3) return 'poor';
    if (l.loss > 0.02 || l.quality < 0.6) return 'fair';
    return 'good';
  }

  function circularMean(angles) {
    let x = 0, y = 0;
    for (const a of angles) { x += Math.cos(a); y += Math.sin(a); }
    return Math.atan2(y, x);
  }

  // Rings by hop count around this node: neighbours on the first, their
  // neighbours on the second (each turned towards the nodes it hangs off,
  // then pushed apart), nodes without a known path outermost. Deterministic:
  // sorted by name. Returns {id: [angle, ring]} and the number of rings.
  function layout(links, me, others, wide) {
    const adj = {};
    for (const l of links) {
      (adj[l.a] = adj[l.a] || []).push(l.b);
      (adj[l.b] = adj[l.b] || []).push(l.a);
    }
    const depth = {};
    depth[me.id] = 0;
    let frontier = [me.id];
    while (frontier.length) {
      const next = [];
      for (const id of frontier) {
        for (const n of adj[id] || []) {
          if (!(n in depth)) { depth[n] = depth[id] + 1; next.push(n); }
        }
      }
      frontier = next;
    }
    const reached = others.filter((n) => n.id in depth).map((n) => depth[n.id]);
    const lost = 1 + Math.max(0, ...reached);
    const rings = [];
    for (const n of others) {
      const d = n.id in depth ? depth[n.id] : lost;
      (rings[d] = rings[d] || []).push(n);
    }
    const count = Math.max(0, rings.length - 1);
    const at = {};
    at[me.id] = [0, 0];
    // one or two neighbours lie along the longer axis, more start at the top
    const even = (k, n) => (n <= 2 && wide ? 0 : -Math.PI / 2) + (2 * Math.PI * k) / n;
    for (let d = 1; d <= count; d++) {
      const ring = (rings[d] || []).slice();
      if (!ring.length) continue;
      const pref = (n) => {
        if (d === 1) return null;   // the first ring hangs off this node alone
        const parents = (adj[n.id] || []).filter((p) => at[p] && depth[p] === d - 1);
        return parents.length ? circularMean(parents.map((p) => at[p][0])) : null;
      };
      const placed = ring.map((n) => ({ n: n, a: pref(n) }));
      if (placed.every((p) => p.a === null)) {
        placed.forEach((p, k) => { p.a = even(k, placed.length); });
      } else {
        // without a parent: opposite the others' mean
        const mean = circularMean(placed.filter((p) => p.a !== null).map((p) => p.a));
        placed.forEach((p) => { if (p.a === null) p.a = mean + Math.PI; });
        spread(placed, Math.min((2 * Math.PI) / placed.length, Math.PI / 4));
      }
      for (const p of placed) at[p.n.id] = [p.a, d];
    }
    return { at: at, rings: count };
  }

  // Pushes angles apart until neighbours on the circle are `gap` apart.
  function spread(placed, gap) {
    const norm = (a) => ((a % (2 * Math.PI)) + 2 * Math.PI) % (2 * Math.PI);
    placed.forEach((p) => { p.a = norm(p.a); });
    placed.sort((x, y) => x.a - y.a || byName(x.n, y.n));
    const n = placed.length;
    if (n < 2) return;
    for (let pass = 0; pass < 50; pass++) {
      let moved = false;
      for (let i = 0; i < n; i++) {
        const p = placed[i], q = placed[(i + 1) % n];
        let d = q.a - p.a;
        if (i === n - 1) d += 2 * Math.PI;
        if (d < gap - 1e-6) {
          const push = (gap - d) / 2;
          p.a -= push;
          q.a += push;
          moved = true;
        }
      }
      if (!moved) break;
    }
  }

  function renderMap(topo, force) {
    const svg = $('topology-map');
    const W = Math.max(280, Math.round(svg.getBoundingClientRect().width || 480));
    // this node's own mode is fresher in the status than in the topology
    const myMode = state.status ? state.status.mode : null;
    const key = W + (myMode || '') + JSON.stringify(topo);
    if (!force && key === state.topoKey) return;
    state.topoKey = key;
    const nodes = (topo.nodes || []).map((n) => (n.self && myMode ? Object.assign({}, n, { mode: myMode }) : n));
    const me = nodes.find((n) => n.self) || { id: topo.me, name: state.status ? state.status.node : '', self: true, mode: myMode };
    const others = nodes.filter((n) => !n.self).sort(byName);
    // a phone gets a square map, a desktop a wide one, taller with more rings
    const narrow = W < 560;
    const plan = layout(topo.links || [], me, others, !narrow);
    const H = Math.round(narrow ? Math.min(Math.max(W, 200 + 110 * plan.rings), 640)
      : Math.min(W * 0.55, 200 + 60 * plan.rings + 6 * others.length, 480));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    const desc = $('map-desc');
    const cx = W / 2, cy = H / 2;
    const ry = H / 2 - 42;
    const rx = W / 2 - (narrow ? 55 : 90);
    const pos = {};
    for (const id in plan.at) {
      const [a, d] = plan.at[id];
      // inner rings a little wider than an even split: room for labels
      const f = d === 0 ? 0 : (d + 0.6) / (plan.rings + 0.6);
      pos[id] = [cx + rx * f * Math.cos(a), cy + ry * f * Math.sin(a), a];
    }
    const names = {};
    for (const n of nodes) names[n.id] = n.name || n.id.slice(0, 8);

    const gl = sv('g', { class: 'links' });
    const links = (topo.links || []).filter((l) => pos[l.a] && pos[l.b]);
    for (const l of links) {
      const [x1, y1] = pos[l.a];
      const [x2, y2] = pos[l.b];
      const kind = l.kind === 'lan' ? 'LAN' : l.kind === 'wan' ? 'WAN' : 'radio';
      const title = names[l.a] + ' – ' + names[l.b] + ': ' + kind + ', RTT ' + l.rtt_ms.toFixed(1)
        + ' ms, ' + Math.round(l.loss * 100) + '% loss';
      gl.append(sv('line', {
        x1: x1.toFixed(1), y1: y1.toFixed(1), x2: x2.toFixed(1), y2: y2.toFixed(1),
        class: 'link k-' + l.kind + ' q-' + linkQuality(l), 'data-a': l.a, 'data-b': l.b,
      }, sv('title', null, title)));
      if (links.length <= 12 && !narrow) {
        // beside the middle of the line, on its left or upper side
        const len = Math.hypot(x2 - x1, y2 - y1) || 1;
        let nx = -(y2 - y1) / len, ny = (x2 - x1) / len;
        if (ny > 0 || (ny === 0 && nx > 0)) { nx = -nx; ny = -ny; }
        const anchor = nx < -0.5 ? 'end' : nx > 0.5 ? 'start' : 'middle';
        gl.append(sv('text', { x: ((x1 + x2) / 2 + nx * 6).toFixed(1), y: ((y1 + y2) / 2 + ny * 6 + 3.5).toFixed(1),
          'text-anchor': anchor, class: 'rtt' }, l.rtt_ms.toFixed(1) + ' ms'));
      }
    }

    const gn = sv('g', { class: 'nodes' });
    for (const n of [me].concat(others)) {
      const [x, y, a] = pos[n.id];
      const r = n.self ? 15 : 11;
      // labels off the lines: beside nodes above or below the centre (and
      // beside every node on a phone, where the map is narrow), else under
      // or over; never out of the picture (text width estimated)
      const width = names[n.id].length * 7 + 4;
      let side = n.self ? 0 : narrow ? (Math.cos(a) < -0.2 ? -1 : 1) : Math.abs(Math.cos(a)) < 0.45 ? 1 : 0;
      if (side > 0 && x + r + 7 + width > W - 4) side = x - r - 7 - width > 4 ? -1 : 0;
      if (side < 0 && x - r - 7 - width < 4) side = x + r + 7 + width < W - 4 ? 1 : 0;
      const above = !n.self && !side && Math.sin(a) < -0.2;
      const tx = side ? x + side * (r + 7) : x;
      const ty = side ? y - 1 : above ? y - r - 18 : y + r + 15;
      const anchor = side > 0 ? 'start' : side < 0 ? 'end' : 'middle';
      const g = sv('g', { class: n.self ? 'node me' : 'node', 'data-node-id': n.id,
        'data-name': names[n.id], 'data-mode': n.mode || 'unknown' },
      sv('title', null, names[n.id] + (n.self ? ' (this node)' : '') + ': ' + (n.mode || 'mode unknown')));
      if (n.self) g.append(sv('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: r + 5, class: 'ring' }));
      g.append(sv('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: r }));
      g.append(sv('text', { x: tx.toFixed(1), y: ty.toFixed(1), 'text-anchor': anchor, class: 'name' }, names[n.id]));
      if (!narrow || n.self) {
        g.append(sv('text', { x: tx.toFixed(1), y: (ty + 13).toFixed(1), 'text-anchor': anchor, class: 'sub' },
          n.self ? 'this node' + (narrow ? '' : ' · ' + (n.mode || 'mode unknown')) : (n.mode || 'mode unknown')));
      }
      gn.append(g);
    }
    const extra = [];
    if (!others.length) {
      extra.push(sv('text', { x: cx, y: H - 14, 'text-anchor': 'middle', class: 'sub' }, 'No other nodes known yet.'));
    }
    svg.replaceChildren(desc, gl, gn, ...extra);
  }

  /* ---------- charts ---------- */

  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // rows: [{label, title, values: {series key: n}}]; xLabel(i) -> text or null
  function barChart(box, rows, series, xLabel) {
    const W = Math.max(260, Math.round(box.getBoundingClientRect().width || 400));
    const H = 150, L = 34, R = 14, T = 8, B = 20;
    const pw = W - L - R, ph = H - T - B;
    const total = (r) => series.reduce((s, [k]) => s + (r.values[k] || 0), 0);
    const max = niceMax(Math.max(0, ...rows.map(total)));
    const svg = sv('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img' });
    for (const f of [0, 0.5, 1]) {
      const y = (T + ph - f * ph).toFixed(1);
      svg.append(sv('line', { x1: L, x2: W - R, y1: y, y2: y, class: f === 0 ? 'axis' : 'gridline' }));
      svg.append(sv('text', { x: L - 5, y: (+y + 3.5).toFixed(1), 'text-anchor': 'end' },
        f === 0 ? '0' : num(Math.round(max * f * 10) / 10)));
    }
    const bw = pw / Math.max(1, rows.length);
    rows.forEach((r, i) => {
      const x = L + i * bw + bw * 0.12;
      const w = Math.max(1, bw * 0.76);
      let y = T + ph;
      const g = sv('g', null, sv('title', null, r.title));
      for (const [k, cls] of series) {
        const v = r.values[k] || 0;
        if (!v) continue;
        const h = (v / max) * ph;
        y -= h;
        g.append(sv('rect', { x: x.toFixed(1), y: y.toFixed(1), width: w.toFixed(1), height: Math.max(0.5, h).toFixed(1), class: cls }));
      }
      // an invisible full-height target so every bar has its tooltip
      g.append(sv('rect', { x: x.toFixed(1), y: T, width: w.toFixed(1), height: ph, fill: 'transparent' }));
      svg.append(g);
      const label = xLabel(i);
      if (label) svg.append(sv('text', { x: (x + w / 2).toFixed(1), y: H - 5, 'text-anchor': 'middle' }, label));
    });
    return svg;
  }

  function legend(series) {
    return el('ul', { class: 'legend' }, ...series.map(([, cls, name]) =>
      el('li', null, el('span', { class: 'swatch ' + cls, 'aria-hidden': 'true' }), name)));
  }

  async function loadReport() {
    let r;
    try { r = await getJSON('/api/v1/report?since=24h&format=json'); } catch (_) { return; }
    const hourly = r.ok && r.data && Array.isArray(r.data.hourly) ? r.data.hourly : [];
    state.report = hourly.some((h) => (h.requests || 0) > 0 || (h.bytes || 0) > 0) ? hourly : null;
    renderReport();
  }

  function renderReport() {
    const box = $('usage-chart');
    const hourly = state.report;
    if (!hourly) {
      if (!box.querySelector('.empty') || box.children.length !== 1) {
        box.replaceChildren(el('p', { class: 'empty' }, 'no usage data yet'));
      }
      return;
    }
    let req = 0, by = 0, store = 0;
    const rows = hourly.map((h) => {
      const v = {};
      let known = 0;
      for (const [k] of SOURCES.slice(0, 4)) { v[k] = h[k] || 0; known += v[k]; }
      v.other = Math.max(0, (h.requests || 0) - known);
      req += h.requests || 0; by += h.bytes || 0; store += v.from_store;
      const start = new Date(h.start);
      const hh = isNaN(start) ? '' : start.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
      const parts = SOURCES.filter(([k]) => v[k]).map(([k, , name]) => num(v[k]) + ' from ' + name);
      return { label: hh, values: v,
        title: hh + ': ' + plural(h.requests || 0, 'request') + ', ' + bytes(h.bytes) + (parts.length ? ' (' + parts.join(', ') + ')' : '') };
    });
    const step = Math.max(1, Math.ceil(rows.length / 6));
    const sum = el('p', { class: 'chart-sum' }, plural(req, 'request') + ', ' + bytes(by)
      + (req ? '; ' + Math.round((100 * store) / req) + '% from this node\'s store' : '') + '.');
    box.replaceChildren(sum, barChart(box, rows, SOURCES, (i) => (i % step === 0 ? rows[i].label : null)), legend(SOURCES));
  }

  function sample(st) {
    const h = st.http;
    if (!h) return;
    const now = Date.now();
    const prev = state.prevHttp;
    state.prevHttp = { h: h, t: now };
    if (!prev) return;
    const d = (k) => Math.max(0, (h[k] || 0) - (prev.h[k] || 0));
    if ((h.responses || 0) < (prev.h.responses || 0)) { state.samples = []; return; }   // the node restarted
    state.samples.push({ t: now, dt: (now - prev.t) / 1000,
      values: { from_store: d('content_hits'), from_mesh: d('via_mesh'), from_internet: d('origin_fetches'), other: d('content_misses') },
      bytes: d('body_bytes') });
    if (state.samples.length > LIVE_SAMPLES) state.samples.shift();
  }

  const LIVE_SERIES = [SOURCES[0], SOURCES[1], SOURCES[2], SOURCES[4]];

  function renderLive(force) {
    const box = $('live-chart');
    const s = state.samples;
    if (!s.length) {
      if (!box.firstChild || box.firstChild.tagName === 'NOSCRIPT') box.replaceChildren(el('p', { class: 'empty' }, 'collecting…'));
      return;
    }
    if (!force && document.hidden) return;
    const rows = s.map((x) => {
      const n = LIVE_SERIES.reduce((a, [k]) => a + (x.values[k] || 0), 0);
      return { values: x.values, title: clock(x.t) + ': ' + plural(n, 'request') + ', ' + bytes(x.bytes) };
    });
    // a fixed time axis: the newest sample on the right, room for the rest
    while (rows.length < LIVE_SAMPLES) rows.unshift({ values: {}, title: 'no sample yet' });
    const last = s.slice(-5);
    const secs = last.reduce((a, x) => a + x.dt, 0) || 1;
    const reqs = last.reduce((a, x) => a + LIVE_SERIES.reduce((b, [k]) => b + (x.values[k] || 0), 0), 0);
    const sent = last.reduce((a, x) => a + x.bytes, 0);
    const spanS = Math.round((s[s.length - 1].t - s[0].t) / 1000);
    const sum = el('p', { class: 'chart-sum' }, 'Now: ' + (reqs / secs).toFixed(1) + ' requests/s, '
      + bytes(sent / secs) + '/s (one bar per ' + Math.round(POLL_MS / 1000) + ' s; ' + duration(spanS) + ' so far).');
    const first = '−' + duration((LIVE_SAMPLES * POLL_MS) / 1000);
    box.replaceChildren(sum, barChart(box, rows, LIVE_SERIES,
      (i) => (i === 0 ? first : i === rows.length - 1 ? 'now' : null)), legend(LIVE_SERIES));
    const st = state.status && state.status.http;
    if (st) {
      setText('live-note', 'Since start: ' + num(st.content_hits) + " from this node's store, " + num(st.via_mesh)
        + ' through the mesh, ' + num(st.origin_fetches) + ' fetched from the internet, ' + num(st.content_misses)
        + ' not found; ' + bytes(st.body_bytes) + ' sent.');
    }
  }

  /* ---------- catalog ---------- */

  async function loadCatalog() {
    let r;
    try { r = await getJSON('/api/v1/catalog?limit=10000'); } catch (_) { return; }
    if (!r.ok || !r.data) return;
    state.catalog = r.data.entries || [];
    setText('catalog-total', String(r.data.total));
    renderCatalog();
  }

  function localHref(url) { return url.replace(/^http:\//, ''); }

  function renderCatalog() {
    if (!state.catalog) return;
    const input = $('catalog-search');
    const q = input.value.trim();
    const terms = q.toLowerCase().split(/\s+/).filter(Boolean);
    const all = state.catalog;
    const match = all.filter((e) => {
      const hay = (e.url + ' ' + (e.tags || []).join(' ') + ' ' + e.content_type + ' ' + PRIORITY[e.priority]).toLowerCase();
      return terms.every((t) => hay.includes(t));
    });
    const body = $('catalog').tBodies[0];
    const rows = match.slice(0, MAX_ROWS).map((e) => el('tr', { 'data-url': e.url },
      el('td', { class: 'url' }, el('a', { href: localHref(e.url) }, e.url),
        e.quarantined ? ' ' : null, e.quarantined ? el('span', { class: 'tag tag-bad' }, 'quarantined') : null),
      el('td', { class: 'num' }, bytes(e.size)),
      el('td', null, (e.content_type || '').split(';')[0]),
      el('td', null, el('span', { class: 'prio prio-' + e.priority }, PRIORITY[e.priority] || String(e.priority))),
      el('td', { class: 'tags' }, (e.tags || []).join(', '))));
    if (!all.length) {
      rows.push(el('tr', { class: 'empty' }, el('td', { colspan: '5' }, 'Nothing here yet.')));
    } else if (!match.length) {
      rows.push(el('tr', { class: 'empty' }, el('td', { colspan: '5' }, 'Nothing matches.')));
    } else if (match.length > MAX_ROWS) {
      rows.push(el('tr', { class: 'more' }, el('td', { colspan: '5' }, '… ' + num(match.length - MAX_ROWS) + ' more: narrow the search.')));
    }
    body.replaceChildren(...rows);
    setText('catalog-count', q ? num(match.length) + ' of ' + plural(all.length, 'item') + ' match “' + q + '”.'
      : plural(all.length, 'item') + '.');
  }

  /* ---------- the loop ---------- */

  function setLive(ok) {
    const live = $('live');
    if (ok) {
      state.fails = 0;
      live.dataset.state = 'live';
      setText('live-text', 'Live');
      setText('updated', 'Updated ' + clock(Date.now()) + '.');
    } else if (++state.fails >= 2) {
      live.dataset.state = 'stale';
      setText('live-text', 'Node not answering: showing the last known state');
    }
  }

  async function poll() {
    clearTimeout(state.timer);
    if (state.busy) return;
    state.busy = true;
    const tick = state.tick++;
    try {
      const [st, peers, topo] = await Promise.all([
        getJSON('/api/v1/status'), getJSON('/api/v1/peers'), getJSON('/api/v1/topology')]);
      if (!st.ok || !st.data) throw new Error('status ' + st.status);
      state.status = st.data;
      renderStatus(st.data);
      sample(st.data);
      if (topo.ok && topo.data) { state.topo = topo.data; renderMap(topo.data, false); }
      if (peers.ok && peers.data) renderPeers(peers.data, state.topo);
      renderLive(false);
      const s = st.data.store;
      const ckey = s.entries + ':' + s.used_bytes + ':' + s.quarantined;
      // the catalog can be large: again when the store changed (at most
      // every 10 s: a busy proxy changes it all the time), else every minute
      const since = tick - state.catalogTick;
      if ((ckey !== state.catalogKey && since >= CATALOG_MIN) || since >= CATALOG_EVERY) {
        state.catalogKey = ckey;
        state.catalogTick = tick;
        loadCatalog();
      }
      if (tick % REPORT_EVERY === 0) loadReport();
      if (tick % ME_EVERY === 0) loadMe();
      setLive(true);
    } catch (_) {
      setLive(false);
    }
    state.busy = false;
    state.timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }

  function start() {
    document.documentElement.classList.add('js');
    const form = $('catalog-form');
    const input = $('catalog-search');
    form.addEventListener('submit', (e) => { e.preventDefault(); renderCatalog(); });
    const search = () => {
      renderCatalog();
      // a reload (or a bookmark) keeps the search, as the server reads ?q=
      const u = new URL(location.href);
      if (input.value.trim()) u.searchParams.set('q', input.value.trim()); else u.searchParams.delete('q');
      history.replaceState(null, '', u.pathname + u.search);
    };
    // 'input' for typing; 'change' and 'search' for clearing (the field's x, automation)
    for (const ev of ['input', 'change', 'search']) input.addEventListener(ev, search);
    let resize = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        if (state.topo) renderMap(state.topo, true);
        renderReport();
        renderLive(true);
      }, 150);
    });
    // back in front: catch up now rather than after the slow background interval
    document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
    setText('live-text', 'Connecting…');
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
