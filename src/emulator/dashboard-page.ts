// The dashboard page served on GET /: one self-contained HTML document (inline CSS and JS, no assets).
import { createHash } from 'node:crypto';

// The page polls dashboard.json every second and rebuilds the user list when the state changed.
// Every user-provided string (ids, names) reaches the DOM through textContent or setAttribute,
// never through innerHTML, so the state cannot inject markup. The script lives inside a template
// literal: it must not contain backticks, "${" or backslashes.
const SCRIPT = `
'use strict';
(function () {
  var POLL_MS = 1000;
  var KEY_STORAGE = 'kana-emulator-api-key';
  var usersEl = document.getElementById('users');
  var statusEl = document.getElementById('status');
  var updatedEl = document.getElementById('updated');
  var form = document.getElementById('key-form');
  var keyInput = document.getElementById('api-key');
  var keyError = document.getElementById('key-error');
  var apiKey = null;
  var lastBody = null;
  var timer = null;
  var inFlight = false;
  var waitingForKey = false;
  var lastStatus = '';

  try { apiKey = sessionStorage.getItem(KEY_STORAGE); } catch (e) { apiKey = null; }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === null || value === undefined || value === false) return;
        if (name === 'class') node.className = value;
        else node.setAttribute(name, String(value));
      });
    }
    for (var i = 2; i < arguments.length; i += 1) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
    }
    return node;
  }

  function num(n) { return Number(n).toLocaleString('en-US'); }

  function units(feature, n) {
    if (n === 1 && feature.unitLabel) return feature.unitLabel;
    return feature.unitLabelPlural || feature.unitLabel || 'used';
  }

  function when(iso) { return iso.slice(0, 16).replace('T', ' ') + ' UTC'; }

  function setStatus(text, kind) {
    if (text === lastStatus) return;
    lastStatus = text;
    statusEl.textContent = text;
    statusEl.className = kind;
  }

  function userLabel(user) { return user.name ? user.name + ' (' + user.id + ')' : user.id; }

  function renderPlans(user) {
    if (user.subscriptions.length === 0) return el('p', { class: 'plans muted' }, 'No plan');
    var list = el('ul', { class: 'plans', 'aria-label': 'Plans of ' + userLabel(user) });
    user.subscriptions.forEach(function (s) {
      var name = s.packageName === s.packageId ? s.packageId : s.packageName + ' (' + s.packageId + ')';
      list.append(el('li', { class: s.entitling ? 'plan' : 'plan inactive' },
        name,
        s.isAddon ? el('span', { class: 'tag' }, 'add-on') : null,
        el('span', { class: 'tag status' }, s.status)));
    });
    return list;
  }

  function renderFeature(user, feature) {
    var label = feature.name + ' for ' + userLabel(user);
    var head = el('div', { class: 'feature-head' }, el('span', { class: 'feature-name' }, feature.name));
    var row = el('li', { class: 'feature', 'data-feature': feature.id }, head);
    var detail = [];
    if (feature.type === 'BINARY') {
      head.append(el('span', { class: 'numbers' }, feature.access ? 'included' : 'no access'));
    } else if (feature.packageId === null) {
      head.append(el('span', { class: 'numbers muted' }, num(feature.used) + ' ' + units(feature, feature.used)));
      detail.push('no active plan includes this feature');
    } else if (feature.budget === null) {
      head.append(el('span', { class: 'numbers' },
        num(feature.used) + ' ' + units(feature, feature.used) + ' · unlimited'));
      row.append(el('div', { class: 'bar unlimited', 'aria-hidden': 'true' }));
    } else {
      var used = feature.used;
      var budget = feature.budget;
      var over = used - budget;
      var text = num(used) + ' / ' + num(budget) + ' ' + units(feature, budget);
      if (over > 0) text += ' · ' + num(over) + ' over budget';
      head.append(el('span', { class: 'numbers' }, text));
      var ratio = budget === 0 ? (used > 0 ? 1 : 0) : Math.min(Math.max(used / budget, 0), 1);
      var bar = el('div', {
        class: over > 0 ? 'bar over' : ratio >= 0.8 ? 'bar near' : 'bar',
        role: 'progressbar',
        'aria-label': label,
        'aria-valuemin': 0,
        'aria-valuemax': budget,
        'aria-valuenow': Math.min(Math.max(used, 0), budget),
        'aria-valuetext': num(used) + ' of ' + num(budget) + ' ' + units(feature, budget) +
          (over > 0 ? ', ' + num(over) + ' over budget' : ''),
        'data-used': used,
      });
      var fill = el('div', { class: 'fill' });
      fill.style.width = (ratio * 100).toFixed(2) + '%';
      bar.append(fill);
      row.append(bar);
      detail.push(feature.overageEnabled ? 'overage allowed' : 'hard limit');
    }
    if (feature.periodEnd) detail.push('resets ' + when(feature.periodEnd));
    if (feature.packageId !== null) detail.push('from ' + feature.packageId);
    if (!feature.access && feature.packageId !== null) {
      head.append(el('span', { class: 'tag blocked' }, 'blocked'));
    }
    if (detail.length > 0) row.append(el('p', { class: 'detail' }, detail.join(' · ')));
    return row;
  }

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var COLOURS = ['#2463eb', '#cf222e', '#1a7f37', '#b7791f', '#8250df', '#0a7ea4', '#bf3989', '#57606a'];
  var filterEl = document.getElementById('user-filter');
  var feedBody = document.querySelector('#feed tbody');
  var chartEl = document.getElementById('chart');
  var lastState = null;

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, String(attrs[name])); });
    return node;
  }

  function clock(iso) { return iso.slice(11, 19); }

  function renderFilter(state) {
    var ids = state.users.map(function (user) { return user.id; });
    var shown = Array.prototype.slice.call(filterEl.options, 1).map(function (option) { return option.value; });
    if (ids.join('|') === shown.join('|')) return;
    var current = filterEl.value;
    var options = [el('option', { value: '' }, 'All users')].concat(ids.map(function (id) {
      return el('option', { value: id }, id);
    }));
    filterEl.replaceChildren.apply(filterEl, options);
    filterEl.value = ids.indexOf(current) >= 0 ? current : '';
  }

  function renderFeed(state, userId) {
    var rows = state.activity.filter(function (entry) { return !userId || entry.userId === userId; }).map(function (entry) {
      return el('tr', { class: 'event ' + entry.kind + ' ' + entry.outcome, 'data-user': entry.userId },
        el('td', { class: 'time' }, clock(entry.at)),
        el('td', null, entry.kind),
        el('td', null, entry.userId),
        el('td', null, entry.featureId),
        el('td', { class: 'numbers' }, entry.outcome === 'set' ? '= ' + num(entry.delta) : num(entry.delta)),
        el('td', { class: 'outcome' }, entry.outcome));
    });
    if (rows.length === 0) rows.push(el('tr', null, el('td', { colspan: 6, class: 'muted' }, 'No usage or checks yet.')));
    feedBody.replaceChildren.apply(feedBody, rows);
  }

  // Cumulative usage per feature over time, one line each, from the usage calls (SET restarts a total).
  function renderChart(state, userId) {
    var calls = state.usage.filter(function (call) { return !userId || call.userId === userId; });
    if (calls.length === 0) {
      chartEl.replaceChildren(el('p', { class: 'muted' }, 'No usage recorded yet.'));
      return;
    }
    var features = [];
    var series = {};
    var totals = {};
    calls.forEach(function (call) {
      var t = Date.parse(call.at);
      if (!series[call.featureId]) { series[call.featureId] = []; features.push(call.featureId); }
      var key = call.userId + ' ' + call.featureId;
      var before = totals[key] || 0;
      totals[key] = call.action === 'SET' ? call.delta : before + call.delta;
      var list = series[call.featureId];
      var last = list.length ? list[list.length - 1].v : 0;
      list.push({ t: t, v: last + totals[key] - before });
    });
    var t0 = Date.parse(calls[0].at);
    var t1 = Math.max(Date.parse(calls[calls.length - 1].at), t0 + 1000);
    var top = 1;
    features.forEach(function (f) { series[f].forEach(function (p) { if (p.v > top) top = p.v; }); });
    var W = 600, H = 160, PAD = 28;
    var chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', class: 'chart',
      'aria-label': 'Usage over time per feature' + (userId ? ' for ' + userId : '') });
    chart.append(svg('line', { x1: PAD, y1: H - PAD, x2: W - 4, y2: H - PAD, class: 'axis' }));
    chart.append(svg('line', { x1: PAD, y1: 4, x2: PAD, y2: H - PAD, class: 'axis' }));
    var topLabel = svg('text', { x: PAD - 4, y: 12, 'text-anchor': 'end', class: 'tick' });
    topLabel.textContent = num(top);
    chart.append(topLabel);
    var start = svg('text', { x: PAD, y: H - 8, class: 'tick' });
    start.textContent = clock(calls[0].at);
    var end = svg('text', { x: W - 4, y: H - 8, 'text-anchor': 'end', class: 'tick' });
    end.textContent = clock(calls[calls.length - 1].at);
    chart.append(start, end);
    var legend = el('ul', { class: 'legend' });
    features.forEach(function (f, i) {
      var colour = COLOURS[i % COLOURS.length];
      var points = [];
      var last = 0;
      series[f].forEach(function (p) {
        var x = PAD + ((p.t - t0) / (t1 - t0)) * (W - PAD - 4);
        var y = function (v) { return H - PAD - (v / top) * (H - PAD - 8); };
        points.push(x.toFixed(1) + ',' + y(last).toFixed(1), x.toFixed(1) + ',' + y(p.v).toFixed(1));
        last = p.v;
      });
      chart.append(svg('polyline', { points: points.join(' '), fill: 'none', stroke: colour, 'stroke-width': 2,
        'data-feature': f, 'data-total': last }));
      var swatch = el('span', { class: 'swatch' });
      swatch.style.background = colour;
      legend.append(el('li', { 'data-feature': f }, swatch, f + ': ' + num(last)));
    });
    chartEl.replaceChildren(chart, legend);
  }

  filterEl.addEventListener('change', function () { if (lastState) render(lastState); });

  function render(state) {
    lastState = state;
    renderFilter(state);
    var userId = filterEl.value;
    renderFeed(state, userId);
    renderChart(state, userId);
    var users = state.users.filter(function (user) { return !userId || user.id === userId; });
    var sections = users.map(function (user, i) {
      var headingId = 'user-' + i;
      var heading = el('h2', { id: headingId }, user.name || user.id);
      if (user.name) heading.append(el('span', { class: 'user-id' }, user.id));
      var section = el('section', { class: 'user', 'aria-labelledby': headingId, 'data-user': user.id },
        heading, renderPlans(user));
      if (user.features.length === 0) {
        section.append(el('p', { class: 'muted' }, 'No features, and no usage recorded.'));
      } else {
        var list = el('ul', { class: 'features' });
        user.features.forEach(function (feature) { list.append(renderFeature(user, feature)); });
        section.append(list);
      }
      return section;
    });
    if (sections.length === 0) {
      sections.push(el('p', { class: 'empty' },
        'No users yet. Start the emulator with --seed seed.json, or create users through the GraphQL API.'));
    }
    usersEl.replaceChildren.apply(usersEl, sections);
  }

  function askForKey(message) {
    waitingForKey = true;
    form.hidden = false;
    keyError.textContent = message;
    setStatus('This emulator listens beyond loopback: enter its API key to see usage.', 'warn');
    keyInput.focus();
  }

  function schedule() {
    if (timer === null && !waitingForKey && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function poll() {
    timer = null;
    if (inFlight) return;
    inFlight = true;
    var headers = apiKey ? { authorization: apiKey } : {};
    fetch('dashboard.json', { headers: headers, cache: 'no-store' })
      .then(function (response) {
        if (response.status === 401) {
          askForKey(apiKey ? 'That key was not accepted.' : '');
          return null;
        }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.text();
      })
      .then(function (body) {
        if (body === null) return;
        if (body !== lastBody) {
          render(JSON.parse(body));
          lastBody = body;
        }
        updatedEl.textContent = 'Updated ' + new Date().toLocaleTimeString('en-GB');
        setStatus('Live: refreshing every second.', 'ok');
      })
      .catch(function () {
        setStatus('Cannot reach the emulator. Retrying every second.', 'error');
      })
      .finally(function () {
        inFlight = false;
        schedule();
      });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    apiKey = keyInput.value.trim();
    try { sessionStorage.setItem(KEY_STORAGE, apiKey); } catch (e) { /* private mode: keep it in memory */ }
    keyInput.value = '';
    form.hidden = true;
    waitingForKey = false;
    poll();
  });

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden && timer === null) poll();
  });

  poll();
})();
`;

const STYLE = `
:root { color-scheme: light dark; --fg: #1f2328; --muted: #656d76; --bg: #fff; --card: #f6f8fa; --line: #d0d7de;
  --track: #e4e7eb; --fill: #2463eb; --near: #b7791f; --over: #cf222e; --ok: #1a7f37; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --card: #161b22; --line: #30363d; --track: #30363d;
    --fill: #4493f8; --near: #d29922; --over: #f85149; --ok: #3fb950; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 60rem; padding: 1.5rem; font: 15px/1.45 system-ui, sans-serif; color: var(--fg);
  background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25rem 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
h2 { font-size: 1.1rem; margin: 0 0 .25rem; }
#status.ok { color: var(--ok); } #status.error { color: var(--over); } #status.warn { color: var(--near); }
#status, #updated { margin: 0; font-size: .9rem; }
#updated { color: var(--muted); }
form { margin: 1rem 0; padding: 1rem; background: var(--card); border: 1px solid var(--line); border-radius: 6px; }
form p { margin-top: 0; }
input { font: inherit; padding: .3rem .5rem; min-width: 22rem; max-width: 100%; }
button { font: inherit; padding: .3rem .8rem; }
.user { margin: 1rem 0; padding: 1rem; background: var(--card); border: 1px solid var(--line); border-radius: 6px; }
.user-id { margin-left: .5rem; font: .85rem ui-monospace, monospace; color: var(--muted); }
ul { list-style: none; margin: 0; padding: 0; }
.plans { display: flex; flex-wrap: wrap; gap: .5rem; margin: 0 0 .75rem; }
.plan.inactive { color: var(--muted); text-decoration: line-through; }
.tag { display: inline-block; margin-left: .35rem; padding: 0 .4rem; font-size: .75rem; border: 1px solid var(--line);
  border-radius: 1rem; text-decoration: none; }
.tag.blocked { color: var(--over); border-color: var(--over); }
.feature { margin: .6rem 0; }
.feature-head { display: flex; flex-wrap: wrap; gap: .25rem .75rem; align-items: baseline; }
.feature-name { font-weight: 600; }
.numbers { font-variant-numeric: tabular-nums; }
.bar { height: .7rem; margin: .2rem 0; background: var(--track); border-radius: .35rem; overflow: hidden; }
.bar .fill { height: 100%; background: var(--fill); transition: width .3s; }
.bar.near .fill { background: var(--near); }
.bar.over .fill { background: var(--over); }
.bar.unlimited { background: repeating-linear-gradient(45deg, var(--track) 0 .4rem, transparent .4rem .8rem); }
.detail, .muted, .empty { margin: 0; font-size: .85rem; color: var(--muted); }
#billed { margin: 1rem 0; padding: 1rem; background: var(--card); border: 1px solid var(--line); border-radius: 6px; }
.toolbar { margin: 0 0 .5rem; }
select { font: inherit; padding: .2rem .4rem; }
.chart { width: 100%; max-height: 12rem; }
.chart .axis { stroke: var(--line); }
.chart .tick { fill: var(--muted); font-size: 11px; }
.legend { display: flex; flex-wrap: wrap; gap: .25rem 1rem; font-size: .85rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; border-radius: 2px; vertical-align: middle; }
#feed { width: 100%; border-collapse: collapse; font-size: .85rem; font-variant-numeric: tabular-nums; }
#feed th, #feed td { padding: .15rem .4rem; text-align: left; border-bottom: 1px solid var(--line); }
#feed .denied .outcome { color: var(--over); }
#feed .allowed .outcome, #feed .recorded .outcome { color: var(--ok); }
`;

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/** Only the page's own inline script and style may run, and it may only fetch from this origin. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Kana emulator</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>Kana emulator</h1>
<p id="status" role="status">Loading…</p>
<p id="updated"></p>
</header>
<form id="key-form" hidden>
<p>This emulator listens beyond loopback, so its dashboard asks for the emulator's API key (printed when it started).</p>
<label for="api-key">API key</label>
<input id="api-key" type="password" autocomplete="off" spellcheck="false" required>
<button type="submit">Show usage</button>
<p id="key-error" role="alert"></p>
</form>
<section id="billed" aria-label="What was billed">
<p class="toolbar"><label for="user-filter">User</label> <select id="user-filter"><option value="">All users</option></select></p>
<h3>Usage over time</h3>
<div id="chart"></div>
<h3>Live feed</h3>
<table id="feed"><thead><tr><th>time (UTC)</th><th>kind</th><th>user</th><th>feature</th><th>delta</th><th>outcome</th></tr></thead><tbody></tbody></table>
</section>
<main id="users"></main>
<script>${SCRIPT}</script>
</body>
</html>
`;
