// The run's kernel check picks out only the reports about sockmap code.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { sockmapTrouble } from './dmesg.js';

const log = [
  '[  10.000000] WARNING: CPU: 0 PID: 1 at net/core/skmsg.c:700 sk_psock_backlog+0x10/0x20',
  '[  10.000001] Call Trace:',
  '[  10.000002] ---[ end trace 0000000000000000 ]---',
  '[  20.000000] WARNING: CPU: 1 PID: 2 at drivers/gpu/foo.c:1 foo+0x1/0x2',
  '[  20.000001] ---[ end trace 0000000000000001 ]---',
  '[  30.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000',
  '[  30.000001]  tcp_bpf_sendmsg+0x1/0x2',
  '[  30.000002] ---[ end trace 0000000000000002 ]---',
  '[  40.000000] sockmap: an ordinary message',
];

it('finds WARNING/BUG reports that name tcp_bpf, sk_psock, sock_map or skmsg, since the start, and no other', () => {
  const all = sockmapTrouble(log, 0);
  assert.equal(all.length, 2);
  assert.match(all[0]?.[0] ?? '', /skmsg\.c/);
  assert.match(all[1]?.[1] ?? '', /tcp_bpf_sendmsg/, 'a report whose call trace passes through tcp_bpf');
  assert.equal(sockmapTrouble(log, 25).length, 1, 'only what was logged since the run started');
  assert.deepEqual(sockmapTrouble(log, 35), [], 'an ordinary line about sockmap is no report');
});
