// mlserve's web page: search, people, text in photos and a status panel
// over the server's private JSON routes. Plain JavaScript, no build step.
//
// Routes live in the URL's fragment (#/search?q=…, #/people, #/people/7,
// #/text?q=…, #/status), so that reloading or sharing a link shows the
// same view. Every element is built with the DOM API (never from HTML
// strings), so that names, paths and recognised text are shown as text.
//
// API key: when the server has MLSERVE_API_KEY, a request without it gets
// 401 and the page asks for the key. The key stays in this tab's
// sessionStorage and goes, as a Bearer token, with every request the page
// makes to this server: JSON calls and images alike (images are then
// fetched and shown as blob: URLs, since an <img> cannot send a header).
'use strict';

const KEY_STORE = 'mlserve.apiKey';
const PAGE = 60; // results per search
const main = document.getElementById('main');
const thumbSize = window.devicePixelRatio > 1.5 ? 512 : 256;

let viewToken = 0; // changes with every view; late answers are dropped
let blobURLs = []; // blob: URLs of the current view's images
let lazy = null; // IntersectionObserver of keyed images
let refreshTimer = 0;
let firstRender = true;
let pendingExample = null; // an image to search by once the search view shows

// ---------------------------------------------------------------- helpers

function getKey() {
  try { return sessionStorage.getItem(KEY_STORE) || ''; } catch { return ''; }
}

function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
  } catch { /* storage disabled: the key lives until the page reloads */ }
}

// h builds an element: h('a', {href: '#', class: 'x', onclick: f}, 'text', child).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svgEl(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

let toastTimer = 0;
function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 3500);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// api calls a JSON route with the key, if any. A 401 opens the key panel.
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const key = getKey();
  if (key) headers.set('Authorization', 'Bearer ' + key);
  let res;
  try {
    res = await fetch(path, { ...opts, headers });
  } catch {
    throw new ApiError(0, 'The server cannot be reached.');
  }
  if (!res.ok) {
    let msg = res.status + ' ' + res.statusText;
    try {
      const body = await res.json();
      if (body && body.detail) msg = body.detail;
    } catch { /* not JSON */ }
    if (res.status === 401) showKeyPanel(key ? 'The server refused this key. ' + msg : msg);
    throw new ApiError(res.status, msg);
  }
  return res.json();
}

function jsonBody(method, value) {
  return { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(value) };
}

function withSize(url, size) { return url + (url.includes('?') ? '&' : '?') + 'size=' + size; }

// showImage loads url into img: directly, or with the key as a blob.
function showImage(img, url) {
  img.classList.add('loading');
  img.addEventListener('load', () => img.classList.remove('loading'), { once: true });
  img.addEventListener('error', () => { img.classList.remove('loading'); img.classList.add('failed'); }, { once: true });
  if (!getKey()) {
    img.loading = 'lazy';
    img.src = url;
    return;
  }
  img.dataset.src = url;
  if (lazy) lazy.observe(img); else fetchImage(img);
}

async function fetchImage(img) {
  const token = viewToken;
  try {
    const res = await fetch(img.dataset.src, { headers: { Authorization: 'Bearer ' + getKey() } });
    if (!res.ok) throw new Error(String(res.status));
    const blob = await res.blob();
    if (token !== viewToken) return;
    const u = URL.createObjectURL(blob);
    blobURLs.push(u);
    img.src = u;
  } catch {
    img.classList.remove('loading');
    img.classList.add('failed');
  }
}

// errorBox shows a failed call in place of a view's content.
function errorBox(err) {
  if (err.status === 401) return h('p', { class: 'msg', role: 'alert' }, 'This server needs its API key: enter it above.');
  let hint = '';
  if (err.status === 503) hint = ' The service or its database is not ready; retry in a moment.';
  return h('p', { class: 'msg', role: 'alert' }, err.message + hint);
}

// highlight returns text with the parts that match query in <mark>:
// the whole query, else each of its words; case and accents are ignored.
// A line that matched only fuzzily is marked whole.
function highlight(text, query) {
  const fold = (s) => s.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
  let folded = '';
  const at = []; // index in text of each folded code unit
  let i = 0;
  for (const ch of text) {
    const f = fold(ch);
    for (let k = 0; k < f.length; k++) at.push(i);
    folded += f;
    i += ch.length;
  }
  at.push(text.length);
  const ranges = [];
  const find = (needle) => {
    if (!needle) return;
    for (let p = folded.indexOf(needle); p >= 0; p = folded.indexOf(needle, p + needle.length)) {
      ranges.push([at[p], at[p + needle.length]]);
    }
  };
  const q = fold(query.trim().replace(/\s+/g, ' '));
  find(q);
  if (!ranges.length) for (const w of q.split(' ')) find(w);
  const frag = document.createDocumentFragment();
  if (!ranges.length) {
    frag.append(h('mark', { class: 'fuzzy' }, text));
    return frag;
  }
  ranges.sort((a, b) => a[0] - b[0]);
  let pos = 0;
  for (const [s, e] of ranges) {
    if (s < pos) continue;
    if (s > pos) frag.append(text.slice(pos, s));
    frag.append(h('mark', {}, text.slice(s, e)));
    pos = e;
  }
  if (pos < text.length) frag.append(text.slice(pos));
  return frag;
}

// ---------------------------------------------------------------- key panel

const keyPanel = document.getElementById('key-panel');
const keyButton = document.getElementById('key-button');
const keyInput = document.getElementById('key-input');
const keyMsg = document.getElementById('key-msg');

function showKeyPanel(msg) {
  keyPanel.hidden = false;
  keyButton.setAttribute('aria-expanded', 'true');
  keyMsg.textContent = msg || '';
  keyInput.focus();
}

function hideKeyPanel() {
  keyPanel.hidden = true;
  keyButton.setAttribute('aria-expanded', 'false');
  keyMsg.textContent = '';
}

keyButton.addEventListener('click', () => (keyPanel.hidden ? showKeyPanel() : hideKeyPanel()));
document.getElementById('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  setKey(keyInput.value.trim());
  keyInput.value = '';
  hideKeyPanel();
  toast('Key saved for this tab');
  checkHealth();
  render();
});
document.getElementById('key-forget').addEventListener('click', () => {
  setKey('');
  keyInput.value = '';
  toast('Key forgotten');
  render();
});

// ---------------------------------------------------------------- health

// checkHealth shows the service's readiness in the header, from
// /health/ready (open, and cheap: no database query).
async function checkHealth() {
  const el = document.getElementById('health');
  const label = el.querySelector('.label');
  let s;
  try {
    const res = await fetch('/health/ready');
    s = await res.json();
  } catch {
    s = { status: 'offline', reason: 'The server cannot be reached.' };
  }
  const ok = s.status === 'ready';
  el.classList.toggle('ok', ok);
  el.classList.toggle('bad', !ok);
  label.textContent = ok ? 'Ready' : s.status === 'offline' ? 'Offline' : 'Not ready';
  el.title = ok ? plural((s.models || []).length, 'model', 'models') + ' loaded, ' + (s.queued || 0) + ' queued' : (s.reason || '');
}

// ---------------------------------------------------------------- routing

function go(hash) {
  if (location.hash === hash) render(); else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/search';
  const i = raw.indexOf('?');
  return { path: i < 0 ? raw : raw.slice(0, i), params: new URLSearchParams(i < 0 ? '' : raw.slice(i + 1)) };
}

function render() {
  viewToken++;
  for (const u of blobURLs) URL.revokeObjectURL(u);
  blobURLs = [];
  if (lazy) lazy.disconnect();
  lazy = 'IntersectionObserver' in window ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) { lazy.unobserve(e.target); fetchImage(e.target); }
    }
  }, { rootMargin: '600px' }) : null;
  clearInterval(refreshTimer);
  document.querySelectorAll('dialog').forEach((d) => d.remove());

  const { path, params } = parseHash();
  let section = 'search';
  let m;
  main.replaceChildren();
  if ((m = path.match(/^\/people\/(\d+)$/))) { section = 'people'; viewPerson(Number(m[1]), params); }
  else if (path === '/people') { section = 'people'; viewPeople(); }
  else if (path === '/text') { section = 'text'; viewText(params); }
  else if (path === '/status') { section = 'status'; viewStatus(); }
  else viewSearch(params);
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  // Move focus to the new view's heading (not on the first load, where
  // the browser's own focus order applies).
  if (!firstRender) main.querySelector('h1')?.focus({ preventScroll: true });
  firstRender = false;
}

function heading(text, title) {
  document.title = (title || text) + ' · mlserve';
  return h('h1', { tabindex: '-1' }, text);
}

// ---------------------------------------------------------------- results

function resultCard(r, onOpen) {
  const img = h('img', { alt: r.path || 'photo ' + r.assetId });
  img.addEventListener('load', () => {
    const ratio = img.naturalWidth / img.naturalHeight;
    if (ratio > 2 || ratio < 0.5) img.classList.add('wide');
  });
  if (r.thumbnail) showImage(img, withSize(r.thumbnail, thumbSize));
  const dist = typeof r.distance === 'number' ? r.distance.toFixed(3) : '';
  return h('li', { class: 'card result', 'data-asset': r.assetId },
    h('button', { type: 'button', class: 'thumb', 'aria-label': 'Open ' + (r.path || 'photo ' + r.assetId), onclick: () => onOpen(r) }, img),
    h('div', { class: 'meta' },
      h('span', { class: 'path', title: r.path || '' }, r.path || '#' + r.assetId),
      dist && h('span', { class: 'dist', title: 'cosine distance (smaller is closer)' }, h('span', { class: 'sr-only' }, 'distance '), dist)));
}

function renderResults(list, results) {
  list.replaceChildren(...results.map((r) => resultCard(r, openViewer)));
}

// openViewer shows one result large, with "find similar".
function openViewer(r) {
  const img = h('img', { alt: r.path || 'photo ' + r.assetId });
  const similar = h('button', { type: 'button' }, 'Find similar photos');
  const close = h('button', { type: 'button', class: 'ghost' }, 'Close');
  const dlg = h('dialog', { class: 'viewer', 'aria-label': r.path || 'photo' },
    img,
    h('div', { class: 'bar' }, h('span', { class: 'path' }, r.path || '#' + r.assetId), h('span', { class: 'row' }, similar, close)));
  document.body.append(dlg);
  if (r.thumbnail) showImage(img, withSize(r.thumbnail, 1024));
  close.addEventListener('click', () => dlg.close());
  dlg.addEventListener('close', () => dlg.remove());
  similar.addEventListener('click', async () => {
    try {
      const headers = getKey() ? { Authorization: 'Bearer ' + getKey() } : {};
      const res = await fetch(withSize(r.thumbnail, 1024), { headers });
      if (!res.ok) throw new Error('thumbnail: ' + res.status);
      pendingExample = { blob: await res.blob(), name: r.path || 'photo ' + r.assetId };
      dlg.close();
      go('#/search');
    } catch (err) {
      toast(err.message);
    }
  });
  dlg.showModal();
  close.focus();
}

// ---------------------------------------------------------------- search

function viewSearch(params) {
  const q = params.get('q') || '';
  const input = h('input', { id: 'q', type: 'search', name: 'q', placeholder: 'a dog on the beach', autocomplete: 'off', value: q });
  const form = h('form', { class: 'search-form', role: 'search' },
    h('label', { for: 'q' }, 'Describe the photo you are looking for'),
    h('div', { class: 'row' }, input, h('button', { type: 'submit' }, 'Search')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (text) go('#/search?q=' + encodeURIComponent(text));
  });

  const file = h('input', { type: 'file', id: 'example-file', accept: 'image/*', class: 'sr-only', tabindex: '-1', 'aria-hidden': 'true' });
  const pick = h('button', { type: 'button', class: 'ghost', id: 'pick' }, 'Choose a photo…');
  pick.addEventListener('click', () => file.click());
  const drop = h('div', { class: 'drop', id: 'drop' },
    h('p', {}, 'Or search by example: drop a photo here, or'), pick, file);
  const example = h('div', { class: 'example', id: 'example', hidden: true });
  const info = h('p', { class: 'info', id: 'search-info', role: 'status' });
  const list = h('ul', { class: 'grid', id: 'results', 'aria-label': 'Results' });

  main.append(heading('Search photos', q ? 'Search: ' + q : 'Search'), form, drop, example, info, list);

  const byImage = async (blob, name) => {
    const token = viewToken;
    const u = URL.createObjectURL(blob);
    blobURLs.push(u);
    example.replaceChildren(h('img', { src: u, alt: '' }), h('span', {}, 'Example: ', h('strong', {}, name)));
    example.hidden = false;
    info.textContent = 'Searching…';
    list.replaceChildren();
    const fd = new FormData();
    fd.append('image', blob, name);
    fd.append('limit', String(PAGE));
    try {
      const data = await api('/search', { method: 'POST', body: fd });
      if (token !== viewToken) return;
      info.textContent = data.results.length
        ? plural(data.results.length, 'photo', 'photos') + ' like ' + name + ', nearest first'
        : 'Nothing indexed yet.';
      renderResults(list, data.results);
    } catch (err) {
      if (token !== viewToken) return;
      info.textContent = '';
      list.replaceChildren();
      info.replaceChildren(errorBox(err));
    }
  };
  file.addEventListener('change', () => {
    if (file.files && file.files[0]) byImage(file.files[0], file.files[0].name);
  });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) byImage(f, f.name);
  });

  if (pendingExample) {
    const { blob, name } = pendingExample;
    pendingExample = null;
    byImage(blob, name);
  } else if (q) {
    textSearch(q, info, list, '/search?limit=' + PAGE + '&q=' + encodeURIComponent(q));
  } else {
    info.textContent = 'Search by words, or by an example photo.';
  }
}

async function textSearch(q, info, list, url) {
  const token = viewToken;
  info.textContent = 'Searching…';
  try {
    const data = await api(url);
    if (token !== viewToken) return;
    info.textContent = data.results.length
      ? plural(data.results.length, 'photo', 'photos') + ' for “' + q + '”, nearest first'
      : 'No photos found.';
    renderResults(list, data.results);
  } catch (err) {
    if (token !== viewToken) return;
    info.textContent = '';
    list.replaceChildren();
      info.replaceChildren(errorBox(err));
  }
}

// ---------------------------------------------------------------- people

function personName(p) { return p.name || 'Person ' + p.id; }

function counts(p) {
  return plural(p.assetCount, 'photo', 'photos') + ' · ' + plural(p.faceCount, 'face', 'faces');
}

// renameForm edits a person's name; done(person) runs after a save.
function renameForm(p, idPrefix, done) {
  const input = h('input', { type: 'text', id: idPrefix + p.id, value: p.name, placeholder: 'Add a name', maxlength: '100', autocomplete: 'off' });
  const form = h('form', { class: 'rename' },
    h('label', { for: input.id, class: 'sr-only' }, 'Name of ' + personName(p)),
    input, h('button', { type: 'submit' }, 'Save'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const np = await api('/people/' + p.id, jsonBody('PUT', { name: input.value }));
      p.name = np.name;
      input.value = np.name;
      toast(np.name ? 'Saved “' + np.name + '”' : 'Name cleared');
      done(np);
    } catch (err) {
      toast(err.message);
    }
  });
  return form;
}

async function viewPeople() {
  const token = viewToken;
  const info = h('p', { class: 'info', role: 'status' }, 'Loading…');
  const list = h('ul', { class: 'people', id: 'people', 'aria-label': 'People' });
  const selected = new Map();
  const into = h('select', { id: 'merge-into' });
  const mergeButton = h('button', { type: 'button', id: 'merge' }, 'Merge');
  const clearButton = h('button', { type: 'button', class: 'ghost' }, 'Clear selection');
  const bar = h('div', { class: 'merge-bar row', id: 'merge-bar', hidden: true, role: 'region', 'aria-label': 'Merge people' },
    h('span', { id: 'merge-count' }), h('label', { for: 'merge-into' }, 'Keep'), into, mergeButton, clearButton);
  main.append(heading('People'),
    h('p', { class: 'hint' }, 'Faces that look alike are grouped into people. Name them, open one to see their photos, or select two or more to merge them into one.'),
    bar, info, list);

  const updateBar = () => {
    bar.hidden = selected.size < 2;
    document.getElementById('merge-count').textContent = selected.size + ' people selected.';
    const keep = into.value;
    into.replaceChildren(...[...selected.values()].map((p) => h('option', { value: p.id }, personName(p) + ' (' + plural(p.faceCount, 'face', 'faces') + ')')));
    if (keep && selected.has(Number(keep))) into.value = keep;
  };
  clearButton.addEventListener('click', () => {
    selected.clear();
    list.querySelectorAll('input[type=checkbox]').forEach((c) => { c.checked = false; });
    list.querySelectorAll('.person').forEach((c) => c.classList.remove('selected'));
    updateBar();
  });
  mergeButton.addEventListener('click', async () => {
    const target = Number(into.value);
    const ids = [...selected.keys()].filter((id) => id !== target);
    mergeButton.disabled = true;
    try {
      const p = await api('/people/' + target + '/merge', jsonBody('POST', { ids }));
      toast('Merged ' + plural(ids.length + 1, 'person', 'people') + ' into ' + personName(p));
      render();
    } catch (err) {
      toast(err.message);
      mergeButton.disabled = false;
    }
  });

  let data;
  try {
    data = await api('/people?limit=1000');
  } catch (err) {
    if (token === viewToken) { info.textContent = ''; list.replaceWith(errorBox(err)); }
    return;
  }
  if (token !== viewToken) return;
  if (!data.people.length) {
    info.textContent = 'No people yet. People appear once photos are indexed with faces (mlserve index --faces …) and the faces are grouped.';
    return;
  }
  info.textContent = plural(data.people.length, 'person', 'people') + '.';
  for (const p of data.people) {
    const img = h('img', { class: 'face', alt: '' });
    if (p.thumbnail) showImage(img, withSize(p.thumbnail, 256));
    const link = h('a', { class: 'face-link', href: '#/people/' + p.id, 'aria-label': 'Photos of ' + personName(p) }, img);
    const check = h('input', { type: 'checkbox', id: 'select-' + p.id });
    const card = h('li', { class: 'person', 'data-person': p.id },
      link,
      renameForm(p, 'name-', (np) => { link.setAttribute('aria-label', 'Photos of ' + personName(np)); updateBar(); }),
      h('p', { class: 'counts' }, counts(p)),
      h('label', { class: 'select', for: check.id }, check, 'Select to merge'));
    check.addEventListener('change', () => {
      if (check.checked) selected.set(p.id, p); else selected.delete(p.id);
      card.classList.toggle('selected', check.checked);
      updateBar();
    });
    list.append(card);
  }
}

async function viewPerson(id, params) {
  const token = viewToken;
  const q = params.get('q') || '';
  main.append(h('a', { class: 'back', href: '#/people' }, '← All people'));
  let p;
  try {
    p = await api('/people/' + id);
  } catch (err) {
    if (token === viewToken) main.append(heading('Person ' + id), errorBox(err));
    return;
  }
  if (token !== viewToken) return;
  const face = h('img', { class: 'face', alt: '' });
  if (p.thumbnail) showImage(face, withSize(p.thumbnail, 256));
  const title = heading(personName(p));
  const countLine = h('p', { class: 'counts' }, counts(p));
  const head = h('div', { class: 'person-head' }, face,
    h('div', {}, title, countLine, renameForm(p, 'person-name-', (np) => {
      title.textContent = personName(np);
      document.title = personName(np) + ' · mlserve';
    })));

  const input = h('input', { id: 'person-q', type: 'search', placeholder: 'at the beach', autocomplete: 'off', value: q });
  const form = h('form', { class: 'search-form', role: 'search' },
    h('label', { for: 'person-q' }, 'Search in the photos of ' + personName(p)),
    h('div', { class: 'row' }, input, h('button', { type: 'submit' }, 'Search'),
      q && h('a', { href: '#/people/' + id }, 'Show all')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    go('#/people/' + id + (text ? '?q=' + encodeURIComponent(text) : ''));
  });
  const info = h('p', { class: 'info', role: 'status' });
  const list = h('ul', { class: 'grid natural', id: 'person-photos', 'aria-label': 'Photos of ' + personName(p) });
  main.append(head, form, info, list);

  if (q) {
    textSearch(q, info, list, '/search?limit=' + PAGE + '&person=' + id + '&q=' + encodeURIComponent(q));
    return;
  }
  try {
    const data = await api('/people/' + id + '/assets?limit=500');
    if (token !== viewToken) return;
    info.textContent = plural(data.assets.length, 'photo', 'photos') + ', newest first. The box marks the face.';
    list.replaceChildren(...data.assets.map((a) => {
      const img = h('img', { alt: a.path || 'photo ' + a.assetId });
      showImage(img, withSize(a.thumbnail, thumbSize));
      const f = a.face;
      const box = svgEl('svg', { viewBox: '0 0 1 1', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
      if (f.imageWidth > 0 && f.imageHeight > 0) {
        box.append(svgEl('rect', {
          class: 'box',
          x: f.box[0] / f.imageWidth, y: f.box[1] / f.imageHeight,
          width: (f.box[2] - f.box[0]) / f.imageWidth, height: (f.box[3] - f.box[1]) / f.imageHeight,
        }));
      }
      return h('li', { class: 'card' },
        h('button', { type: 'button', class: 'frame', 'aria-label': 'Open ' + (a.path || 'photo ' + a.assetId), onclick: () => openViewer(a) }, img, box),
        h('div', { class: 'meta' }, h('span', { class: 'path', title: a.path || '' }, a.path || '#' + a.assetId)));
    }));
  } catch (err) {
    if (token === viewToken) list.replaceChildren();
      info.replaceChildren(errorBox(err));
  }
}

// ---------------------------------------------------------------- text in photos

function viewText(params) {
  const q = params.get('q') || '';
  const input = h('input', { id: 'ocr-q', type: 'search', placeholder: 'receipt 42', autocomplete: 'off', value: q, maxlength: '256' });
  const form = h('form', { class: 'search-form', role: 'search' },
    h('label', { for: 'ocr-q' }, 'Find photos by the text in them'),
    h('div', { class: 'row' }, input, h('button', { type: 'submit' }, 'Search')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (text) go('#/text?q=' + encodeURIComponent(text));
  });
  const info = h('p', { class: 'info', role: 'status' });
  const list = h('ul', { class: 'ocr', id: 'ocr-results', 'aria-label': 'Photos with the text' });
  main.append(heading('Text in photos', q ? 'Text: ' + q : 'Text in photos'),
    h('p', { class: 'hint' }, 'Matches the words recognised in photos: exact (case and accents ignored) or similar spellings.'),
    form, info, list);
  if (!q) return;
  const token = viewToken;
  info.textContent = 'Searching…';
  api('/search?limit=' + PAGE + '&ocr=' + encodeURIComponent(q)).then((data) => {
    if (token !== viewToken) return;
    info.textContent = data.results.length
      ? plural(data.results.length, 'photo', 'photos') + ' with “' + q + '”'
      : 'No photo contains “' + q + '”.';
    list.replaceChildren(...data.results.map((r) => ocrCard(r, q)));
  }, (err) => {
    if (token !== viewToken) return;
    info.textContent = '';
    list.replaceChildren();
      info.replaceChildren(errorBox(err));
  });
}

function ocrCard(r, q) {
  const img = h('img', { alt: r.path || 'photo ' + r.assetId });
  if (r.thumbnail) showImage(img, withSize(r.thumbnail, 512));
  const boxes = svgEl('svg', { viewBox: '0 0 1 1', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
  for (const l of r.lines) {
    const pts = [];
    for (let i = 0; i < 8; i += 2) pts.push(l.box[i] + ',' + l.box[i + 1]);
    boxes.append(svgEl('polygon', { class: 'box', points: pts.join(' ') }));
  }
  const lines = r.lines.length
    ? h('ol', {}, r.lines.map((l) => h('li', {}, highlight(l.text, q))))
    : h('p', { class: 'score' }, 'The text runs over several lines.');
  return h('li', { class: 'ocr-hit', 'data-asset': r.assetId },
    h('div', { class: 'frame' }, img, boxes),
    h('div', { class: 'lines' },
      h('p', { class: 'path', title: r.path || '' }, h('strong', {}, r.path || '#' + r.assetId)),
      lines,
      h('p', { class: 'score' }, r.score >= 1 ? 'Contains the text' : 'Similar text (similarity ' + r.score.toFixed(2) + ')')));
}

// ---------------------------------------------------------------- status

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function rate(x) { return x.toFixed(x >= 10 ? 0 : x >= 1 ? 1 : 2) + '/s'; }

function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1 << 20) return (n / 1024).toFixed(0) + ' KiB';
  return (n / (1 << 20)).toFixed(1) + ' MiB';
}

function viewStatus() {
  const box = h('div', { class: 'status-grid', id: 'status' }, h('p', { class: 'info' }, 'Loading…'));
  main.append(heading('Status'), h('p', { class: 'hint' }, 'Refreshed every 5 seconds.'), box);
  const token = viewToken;
  const load = async () => {
    let s;
    try {
      s = await api('/status');
    } catch (err) {
      if (token === viewToken) box.replaceChildren(errorBox(err));
      return;
    }
    if (token !== viewToken) return;
    const t = s.throughput;
    const service = h('section', { class: 'panel', 'aria-labelledby': 'st-service' }, h('h2', { id: 'st-service' }, 'Service'),
      facts([
        ['Status', s.status === 'ready' ? 'Ready' : 'Not ready' + (s.reason ? ': ' + s.reason : '')],
        ['Workers', s.busy + ' busy of ' + s.workers],
        ['Queue', s.queued + ' waiting (at most ' + s.maxQueue + ')'],
        ['/predict', rate(t.predict) + ' over the last ' + Math.round(t.windowSeconds) + ' s'],
        ['/search', rate(t.search) + ' over the last ' + Math.round(t.windowSeconds) + ' s'],
      ]));
    const models = h('section', { class: 'panel full', 'aria-labelledby': 'st-models' }, h('h2', { id: 'st-models' }, 'Loaded models'),
      s.models.length
        ? h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Model', 'Task', 'Provider', 'Device', 'In use', '/predict runs'].map((c, i) => h('th', { scope: 'col', class: i >= 4 ? 'num' : null }, c)))),
          h('tbody', {}, s.models.map((m) => h('tr', {},
            h('td', {}, m.model), h('td', {}, m.task + ' / ' + m.type), h('td', {}, m.provider || '—'), h('td', {}, m.device || '—'),
            h('td', { class: 'num' }, m.inUse), h('td', { class: 'num' }, rate(m.inferencesPerSecond)))))))
        : h('p', { class: 'empty' }, 'None yet: models load on first use.'));
    const lib = s.library;
    const library = h('section', { class: 'panel', 'aria-labelledby': 'st-library' }, h('h2', { id: 'st-library' }, 'Library'),
      !lib ? h('p', { class: 'empty' }, 'No database configured (MLSERVE_DATABASE_URL).')
        : !lib.available ? h('p', { class: 'msg' }, 'Database unavailable: ' + lib.reason)
          : facts([
            ['Database', lib.mode === 'immich' ? 'Immich (smart_search)' : 'mlserve schema'],
            ['CLIP model', lib.model],
            lib.assets >= 0 && ['Photos', String(lib.assets)],
            lib.faces >= 0 && ['Faces', String(lib.faces)],
            lib.people >= 0 && ['People', String(lib.people)],
            lib.textLines >= 0 && ['Lines of text', String(lib.textLines)],
            lib.mode !== 'immich' && ['Text search', (lib.fuzzyText ? 'exact and similar (pg_trgm)' : 'exact only (no pg_trgm)') + (lib.unaccent ? ', accents ignored' : ', accents must match')],
          ]));
    const th = s.thumbnails;
    const thumbs = h('section', { class: 'panel', 'aria-labelledby': 'st-thumbs' }, h('h2', { id: 'st-thumbs' }, 'Thumbnail cache'),
      facts([
        ['Cached', plural(th.entries, 'thumbnail', 'thumbnails') + ', ' + bytes(th.bytes) + ' of ' + bytes(th.maxBytes)],
        ['Hits', th.hits + ' (' + th.misses + ' made)'],
      ]));
    box.replaceChildren(service, library, thumbs, models);
  };
  load();
  refreshTimer = setInterval(load, 5000);
}

// ---------------------------------------------------------------- start

window.addEventListener('hashchange', render);
if (!location.hash) history.replaceState(null, '', '#/search');
render();
checkHealth();
setInterval(checkHealth, 15000);
