'use strict';
// The inbound buffer: one file per message under <state>/inbox/, written before the message is
// offered to the daemon and removed only when the daemon acks it. A crash of either side leaves
// the file, and the next connection delivers it again (the daemon is idempotent on the id).

const fs = require('fs');
const path = require('path');

function write(file, entry) {
  const tmp = file + '.tmp';
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, JSON.stringify(entry));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

class InboundBuffer {
  constructor(dir) {
    this.dir = dir;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.entries = new Map(); // id -> {seq, frame, raw, file}
    this.seq = 0;
    for (const name of fs.readdirSync(dir).sort()) {
      if (!name.endsWith('.json')) {
        if (name.endsWith('.tmp')) fs.rmSync(path.join(dir, name), { force: true }); // a torn write
        continue;
      }
      const file = path.join(dir, name);
      try {
        const entry = JSON.parse(fs.readFileSync(file, 'utf8'));
        entry.file = file;
        this.entries.set(entry.frame.id, entry);
        this.seq = Math.max(this.seq, entry.seq);
      } catch (err) {
        fs.renameSync(file, file + '.bad'); // keep it for a human, never block the rest
      }
    }
  }

  has(id) { return this.entries.has(id); }

  /** Persist (fsync'd) before anyone sees it. Returns the entry, or null when already buffered. */
  put(frame, raw) {
    if (this.entries.has(frame.id)) return null;
    const seq = ++this.seq;
    const safeId = String(frame.id).replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 80);
    const file = path.join(this.dir, `${String(seq).padStart(12, '0')}-${safeId}.json`);
    const entry = { seq, frame: { ...frame, seq }, raw };
    write(file, entry);
    entry.file = file;
    this.entries.set(frame.id, entry);
    return entry;
  }

  /** Persist a changed frame of a buffered message (its downloaded media); false when acked meanwhile. */
  update(id, frame) {
    const entry = this.entries.get(id);
    if (!entry) return false;
    entry.frame = { ...frame, seq: entry.seq };
    write(entry.file, { seq: entry.seq, frame: entry.frame, raw: entry.raw });
    return true;
  }

  ack(id) {
    const entry = this.entries.get(id);
    if (!entry) return false;
    this.entries.delete(id);
    fs.rmSync(entry.file, { force: true });
    return true;
  }

  pending() { return [...this.entries.values()].sort((a, b) => a.seq - b.seq); }

  get size() { return this.entries.size; }
}

module.exports = { InboundBuffer };
