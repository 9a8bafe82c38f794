"""The JavaScript the browser tools run in a page (browser.py sends them with Runtime.evaluate;
the argument is inlined as JSON): READ_JS lists what a page says and which controls it has,
FIND_JS finds the element a click or fill names, by CSS selector or by its visible text."""

READ_JS = """(() => {
  const body = document.body || document.documentElement;
  const controls = [];
  for (const el of document.querySelectorAll('input, textarea, select, button, [role=button]')) {
    if (controls.length >= 40) break;
    const r = el.getBoundingClientRect();
    if ((!r.width && !r.height) || el.type === 'hidden') continue;
    const tag = el.tagName.toLowerCase();
    let sel = tag;
    if (el.id) sel = '#' + CSS.escape(el.id);
    else if (el.name) sel = tag + '[name="' + el.name + '"]';
    const label = (el.labels && el.labels[0] ? el.labels[0].innerText : '') || el.innerText || el.value
      || el.placeholder || el.getAttribute('aria-label') || el.title || '';
    controls.push(sel + (el.type && tag === 'input' ? ' (' + el.type + ')' : '') +
      (label.trim() ? ': ' + label.trim().replace(/\\s+/g, ' ').slice(0, 60) : ''));
  }
  return {title: document.title, url: location.href, text: body ? body.innerText : '', controls};
})()"""

FIND_JS = """((q, mode) => {
  let el = null;
  try { el = document.querySelector(q); } catch (e) {}
  const norm = (s) => (s || '').replace(/\\s+/g, ' ').trim().toLowerCase();
  const want = norm(q);
  if (!el && mode === 'click') {
    const text = (e) => norm(e.innerText || e.value || e.getAttribute('aria-label') || e.title);
    const cands = [...document.querySelectorAll('a, button, input[type=submit], input[type=button], ' +
      'input[type=checkbox], input[type=radio], [role=button], [role=link], [onclick], label, summary')];
    el = cands.find(e => text(e) === want) || cands.find(e => text(e).includes(want)) || null;
    if (!el && want) {
      const all = [...document.body.querySelectorAll('*')].filter(e => norm(e.innerText).includes(want));
      el = all.length ? all[all.length - 1] : null;
    }
  }
  if (!el && mode === 'fill') {
    const fields = [...document.querySelectorAll('input, textarea, select, [contenteditable=true]')];
    const names = (e) => [e.name, e.placeholder, e.getAttribute('aria-label'), e.id,
      e.labels && e.labels[0] ? e.labels[0].innerText : ''].map(norm);
    el = fields.find(e => names(e).includes(want)) || fields.find(e => names(e).some(n => n && n.includes(want))) || null;
  }
  if (!el) return null;
  el.scrollIntoView({block: 'center', inline: 'center'});
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  const desc = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    ((el.innerText || el.value || '').trim() ? ' "' + (el.innerText || el.value).trim().slice(0, 60) + '"' : '');
  if (mode === 'fill') {
    el.focus();
    if ('value' in el && el.tagName !== 'SELECT') { el.value = ''; }
    else if (el.isContentEditable) { document.execCommand('selectAll', false, null); }
    return {desc, select: el.tagName === 'SELECT', focused: document.activeElement === el};
  }
  const covered = !(hit && (hit === el || el.contains(hit)));
  if (covered) el.click();
  return {desc, x, y, covered};
})"""
