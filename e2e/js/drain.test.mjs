// Graceful drain, against a herald of its own: SIGTERM closes every WebSocket with 4200
// ("reconnect now"). The Go harness then checks that herald exited with status 0.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, uniq, env, admin } from './lib.mjs';

afterEach(cleanup);

test('SIGTERM: every client is closed with 4200 and pusher-js starts reconnecting', { timeout: 15000 }, async () => {
  assert.ok(env.pid > 0, 'HERALD_PID is set');
  const ch = uniq('presence-drain-');
  const a = await connect({ name: 'a', user: { user_id: 'a' } });
  const b = await connect({ name: 'b' });
  const c = await connect({ name: 'c', user: { user_id: 'c' } });
  await a.subscribed(ch);
  await c.subscribed(ch);
  await b.subscribed(uniq('public-'));
  assert.equal((await admin('/readyz')).status, 200);

  process.kill(env.pid, 'SIGTERM');

  for (const x of [a, b, c]) {
    const close = await x.waitClose(0, 10000);
    assert.equal(close.code, 4200, `${x.name}: close code; wire:\n${x.dump()}`);
    // 4200 is "retry": pusher-js goes straight back to connecting (herald is gone, so
    // it will not get far; that is expected).
    await x.waitState('connecting', 3000);
    assert.ok(x.errors.find((e) => e.code === 4200), `${x.name}: pusher-js reported 4200`);
  }
});
