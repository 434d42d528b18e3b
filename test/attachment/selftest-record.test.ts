// The self-test record of an attachment and the reader safety read back
// from it: which reader kinds a self-test found unsafe, with what symptom,
// or that nobody knows. Rootless: its directory is a temporary one
// (ACCEL_STATE_DIR).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'accel-selftest-record-')), 'state');
process.env.ACCEL_STATE_DIR = dir;
after(() => fs.rmSync(path.dirname(dir), { recursive: true, force: true }));
const { readerSafetyStatus, removeSelftestRecord, saveSelftestRecord, selftestRecord } = await import('../../src/attachment/selftest-record.js');
const { readerSafety, readerSymptom, unsafeReaders } = await import('../../src/fastpath/readers.js');
const { selftestRecordPath } = await import('../../src/paths.js');

const SPLICE_EOF = 'premature EOF: splice(2) returned 0 after 0 of 4194304 bytes while recv() had more to read';
const EAGAIN = 'spurious EAGAIN: blocking recv failed after 2 ms, before its 2000 ms timeout';

describe('reader kinds', () => {
  it("a kind is unsafe when any of its checks failed, with the first failure's check and error", () => {
    const checks = [
      { name: 'epoll reader (inside)', ok: true, error: null },
      { name: 'splice(2) reader (inside)', ok: false, error: SPLICE_EOF, readerKind: 'splice' as const },
      { name: 'splice(2) reader (server inside, client outside)', ok: true, error: null, readerKind: 'splice' as const },
      { name: 'blocking reader of the reply after half-close (inside)', ok: true, error: null, readerKind: 'blocking-after-half-close' as const },
    ];
    assert.deepEqual(readerSafety(checks), [
      { kind: 'splice', safe: false, check: 'splice(2) reader (inside)', error: SPLICE_EOF },
      { kind: 'blocking-after-half-close', safe: true, check: null, error: null },
    ]);
    assert.deepEqual(unsafeReaders(readerSafety(checks)), [{ kind: 'splice', symptom: 'premature EOF', check: 'splice(2) reader (inside)', error: SPLICE_EOF }]);
  });

  it('a kind no check probed is not reported safe', () => {
    assert.deepEqual(readerSafety([{ name: 'epoll reader (inside)', ok: true, error: null }]), []);
  });

  it("names the symptom from sockprobe's error", () => {
    assert.equal(readerSymptom(SPLICE_EOF), 'premature EOF');
    assert.equal(readerSymptom(EAGAIN), 'spurious EAGAIN');
    assert.equal(readerSymptom('reader stalled: no data and no EOF within 2000 ms'), 'stall');
    assert.equal(readerSymptom('byte 17 differs from the stream'), 'wrong bytes');
    assert.equal(readerSymptom('EOF after 10 of 20 bytes'), 'error');
  });
});

describe('self-test record', () => {
  const result = (readers: ReturnType<typeof readerSafety>) => ({ ok: true, withStreamVerdict: false, checks: [], bytesRedirected: 1n, readers });

  it('without a record, reader safety is unknown', () => {
    const s = readerSafetyStatus(11n);
    assert.equal(s.readerSafety.state, 'unknown');
    assert.match(s.readerSafety.why ?? '', /no self-test record/);
    assert.deepEqual(s.unsafeReaders, []);
  });

  it('a tested install lists the unsafe kinds of the setup that was attached (the last self-test)', () => {
    const plainFailed = result([{ kind: 'blocking-after-half-close', safe: false, check: 'x', error: EAGAIN }]);
    const chosen = result([
      { kind: 'splice', safe: false, check: 'splice(2) reader (inside)', error: SPLICE_EOF },
      { kind: 'blocking-after-half-close', safe: true, check: null, error: null },
    ]);
    saveSelftestRecord(12n, selftestRecord([plainFailed, chosen], true));
    const s = readerSafetyStatus(12n);
    assert.equal(s.readerSafety.state, 'tested');
    assert.equal(s.readerSafety.kernel, os.release());
    assert.deepEqual(
      s.unsafeReaders.map((u) => [u.kind, u.symptom]),
      [['splice', 'premature EOF']],
    );
    removeSelftestRecord(12n);
    assert.equal(fs.existsSync(selftestRecordPath(12n)), false);
    assert.equal(readerSafetyStatus(12n).readerSafety.state, 'unknown');
  });

  it('all kinds safe: tested, nothing unsafe', () => {
    saveSelftestRecord(13n, selftestRecord([result([{ kind: 'splice', safe: true, check: null, error: null }])], false));
    assert.deepEqual(readerSafetyStatus(13n).unsafeReaders, []);
    assert.equal(readerSafetyStatus(13n).readerSafety.state, 'tested');
  });

  it('--skip-selftest (no self-test run): not tested, and nothing claimed unsafe', () => {
    saveSelftestRecord(14n, selftestRecord([], false));
    const s = readerSafetyStatus(14n);
    assert.deepEqual([s.readerSafety.state, s.readerSafety.why, s.unsafeReaders], ['not tested', 'attached with --skip-selftest', []]);
  });

  it('a record accel cannot read is unknown, not an error', () => {
    fs.writeFileSync(selftestRecordPath(15n), '{"version": 1, "tes');
    assert.match(readerSafetyStatus(15n).readerSafety.why ?? '', /the self-test record .*cgroup-15\.selftest\.json is not JSON/);
  });
});
