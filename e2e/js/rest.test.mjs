// The Pusher HTTP API through the `pusher` SDK: every endpoint, the info attributes,
// batches, limits and signature errors.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, json, apiError, env } from './lib.mjs';

afterEach(cleanup);

// assertError checks the {"error":msg,"code":status} body of a failed request.
function assertError(r, status) {
  assert.equal(r.status, status, `status; body ${r.text}`);
  assert.equal(r.body.code, status, `body.code; body ${r.text}`);
  assert.equal(typeof r.body.error, 'string', r.text);
  assert.ok(r.body.error.length > 0, 'error message is not empty');
}

// subscribers subscribes max(2, users.length) connections to ch (connection i with
// presence user users[i]) and returns them.
async function subscribers(ch, users = []) {
  const out = [];
  for (let i = 0; i < Math.max(2, users.length); i++) {
    const c = await connect({ name: `sub${i}`, user: users[i] });
    await c.subscribed(ch);
    out.push(c);
  }
  return out;
}

const u = (id) => ({ user_id: id, user_info: { name: id.toUpperCase() } });

test('trigger with info=subscription_count and info=user_count', { timeout: 10000 }, async () => {
  const pub = uniq('public-info-');
  const pres = uniq('presence-info-');
  await subscribers(pub);
  // Three connections, two users.
  await subscribers(pres, [u('u1'), u('u2'), u('u1')]);

  const r1 = await sdk().trigger(pub, 'e', {}, { info: 'subscription_count' });
  assert.deepEqual(await json(r1), { channels: { [pub]: { subscription_count: 2 } } });
  const r2 = await sdk().trigger(pres, 'e', {}, { info: 'user_count' });
  assert.deepEqual(await json(r2), { channels: { [pres]: { user_count: 2 } } });
  const r3 = await sdk().trigger([pub, pres], 'e', {}, { info: 'subscription_count,user_count' });
  const body = await json(r3);
  assert.equal(body.channels[pub].subscription_count, 2, JSON.stringify(body));
  assert.equal(body.channels[pres].user_count, 2, JSON.stringify(body));
});

test('trigger to several channels delivers to each', { timeout: 10000 }, async () => {
  const chans = [uniq('multi-a-'), uniq('multi-b-'), uniq('multi-c-')];
  const c = await connect({ name: 'c' });
  for (const ch of chans) await c.subscribed(ch);
  const res = await sdk().trigger(chans, 'fan', { x: 1 });
  assert.equal(res.status, 200);
  for (const ch of chans) {
    const ev = await c.waitEvent(ch, 'fan');
    assert.deepEqual(ev.data, { x: 1 });
  }
});

test('triggerBatch delivers every event in order and answers info per event', { timeout: 10000 }, async () => {
  const a = uniq('batch-a-');
  const b = uniq('batch-b-');
  const c = await connect({ name: 'c' });
  const d = await connect({ name: 'd' });
  await c.subscribed(a);
  await c.subscribed(b);
  await d.subscribed(a);
  const res = await sdk().triggerBatch([
    { channel: a, name: 'one', data: { n: 1 }, info: 'subscription_count' },
    { channel: b, name: 'two', data: { n: 2 } },
    { channel: a, name: 'three', data: 'three as text' },
    { channel: b, name: 'four', data: { n: 4 }, info: 'subscription_count' },
    { channel: a, name: 'five', data: { n: 5 }, socket_id: d.socketId },
  ]);
  assert.equal(res.status, 200);
  const body = await json(res);
  assert.deepEqual(body, { batch: [{ subscription_count: 2 }, {}, {}, { subscription_count: 1 }, {}] });

  await c.waitEvent(a, 'five');
  await c.waitEvent(b, 'four');
  assert.deepEqual(c.received(a).filter((e) => !e.event.startsWith('pusher')).map((e) => [e.event, e.data]), [
    ['one', { n: 1 }],
    ['three', 'three as text'],
    ['five', { n: 5 }],
  ]);
  assert.deepEqual(c.received(b).filter((e) => !e.event.startsWith('pusher')).map((e) => e.event), ['two', 'four']);
  // d was excluded from 'five' by socket_id; 'three' came before it.
  await d.waitEvent(a, 'three');
  const dOnA = () => d.received(a).filter((e) => !e.event.startsWith('pusher')).map((e) => e.event);
  await sdk().trigger(a, 'marker', {});
  await d.waitEvent(a, 'marker');
  assert.deepEqual(dOnA(), ['one', 'three', 'marker']);
});

test('batch limits: 10 events accepted, 11 refused with 400', { timeout: 10000 }, async () => {
  const ch = uniq('batch-limit-');
  const ten = Array.from({ length: 10 }, (_, i) => ({ channel: ch, name: 'e', data: { i } }));
  const ok = await sdk().triggerBatch(ten);
  assert.equal(ok.status, 200);
  const eleven = Array.from({ length: 11 }, (_, i) => ({ channel: ch, name: 'e', data: { i } }));
  assertError(await apiError(sdk().triggerBatch(eleven)), 400);
});

test('GET /channels lists occupied channels, filter_by_prefix and info=user_count', { timeout: 10000 }, async () => {
  const tag = uniq('');
  const pub = `public-${tag}`;
  const pres1 = `presence-${tag}-one`;
  const pres2 = `presence-${tag}-two`;
  await subscribers(pub);
  await subscribers(pres1, [u('a'), u('b')]);
  await subscribers(pres2, [u('c'), u('c')]);

  const all = await json(await sdk().get({ path: '/channels' }));
  assert.ok(all.channels, JSON.stringify(all));
  for (const ch of [pub, pres1, pres2]) {
    assert.deepEqual(all.channels[ch], {}, `${ch} listed without attributes: ${JSON.stringify(all)}`);
  }
  assert.equal(all.channels[`public-${tag}-empty`], undefined);

  const pres = await json(await sdk().get({ path: '/channels', params: { filter_by_prefix: `presence-${tag}`, info: 'user_count' } }));
  assert.deepEqual(pres, { channels: { [pres1]: { user_count: 2 }, [pres2]: { user_count: 1 } } });

  const filtered = await json(await sdk().get({ path: '/channels', params: { filter_by_prefix: 'public-' } }));
  assert.ok(filtered.channels[pub], JSON.stringify(filtered));
  for (const name of Object.keys(filtered.channels)) assert.ok(name.startsWith('public-'), `${name} does not match the prefix`);

  // user_count needs the prefix to limit the list to presence channels.
  assertError(await apiError(sdk().get({ path: '/channels', params: { info: 'user_count' } })), 400);
});

test('channel names with ; = @ , . in the path and in filter_by_prefix (the SDK sends them unescaped)', { timeout: 10000 }, async () => {
  // Every character here is allowed in channel names (PUSHER.md 1.6). The Node SDK puts
  // query values into the URL exactly as they are signed, without escaping (lib/requests.js).
  const tag = uniq('');
  const ch = `public-${tag};b=c@d,e.f`;
  await subscribers(ch);
  const one = await json(await sdk().get({ path: `/channels/${ch}`, params: { info: 'subscription_count' } }));
  assert.deepEqual(one, { occupied: true, subscription_count: 2 });
  let listed;
  try {
    listed = await json(await sdk().get({ path: '/channels', params: { filter_by_prefix: `public-${tag};b=c` } }));
  } catch (e) {
    assert.fail(`GET /channels?filter_by_prefix=public-${tag};b=c answered ${e.status} ${e.body}`);
  }
  assert.deepEqual(listed, { channels: { [ch]: {} } });
});

test('GET /channels/{name} with info', { timeout: 10000 }, async () => {
  const pub = uniq('public-one-');
  const pres = uniq('presence-one-');
  await subscribers(pub);
  await subscribers(pres, [u('x'), u('y'), u('x')]);

  assert.deepEqual(await json(await sdk().get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } })), { occupied: true, subscription_count: 2 });
  assert.deepEqual(await json(await sdk().get({ path: `/channels/${pub}` })), { occupied: true });
  assert.deepEqual(await json(await sdk().get({ path: `/channels/${pres}`, params: { info: 'user_count' } })), { occupied: true, user_count: 2 });
  assert.deepEqual(await json(await sdk().get({ path: `/channels/${uniq('nobody-')}` })), { occupied: false });
  // user_count is only for presence channels.
  assertError(await apiError(sdk().get({ path: `/channels/${pub}`, params: { info: 'user_count' } })), 400);
});

test('GET /channels/{name}/users lists distinct users; 400 for a non-presence channel', { timeout: 10000 }, async () => {
  const pres = uniq('presence-users-');
  await subscribers(pres, [u('p'), u('q'), u('p')]);
  const body = await json(await sdk().get({ path: `/channels/${pres}/users` }));
  assert.deepEqual(body.users.sort((a, b) => a.id.localeCompare(b.id)), [{ id: 'p' }, { id: 'q' }]);
  assertError(await apiError(sdk().get({ path: `/channels/${uniq('public-')}/users` })), 400);
});

test('wrong secret: 401 with a JSON message', { timeout: 10000 }, async () => {
  const bad = sdk({ secret: 'wrong-secret' });
  assertError(await apiError(bad.trigger(uniq('public-'), 'e', {})), 401);
  assertError(await apiError(bad.get({ path: '/channels' })), 401);
  // The right secret with another app's key is no better.
  assertError(await apiError(sdk({ key: 'not-the-key' }).trigger(uniq('public-'), 'e', {})), 401);
});

test('tampered body, stale or future auth_timestamp: 401', { timeout: 10000 }, async () => {
  const s = sdk();
  const path = `/apps/${env.app.id}/events`;
  const body = JSON.stringify({ name: 'e', channels: [uniq('public-')], data: '{}' });
  const qs = s.createSignedQueryString({ method: 'POST', path, body });
  const send = (query, b) => fetch(`http://${env.host}:${env.port}${path}?${query}`, { method: 'POST', body: b, headers: { 'content-type': 'application/json' } });

  const good = await send(qs, body);
  assert.equal(good.status, 200, await good.text());
  const tampered = await send(qs, body.replace('"e"', '"f"'));
  assert.equal(tampered.status, 401, 'body that does not match body_md5');
  const errBody = JSON.parse(await tampered.text());
  assert.equal(errBody.code, 401);

  // auth_timestamp must be within 600 s of the server's clock.
  const realNow = Date.now;
  let stale;
  try {
    Date.now = () => realNow() - 20 * 60 * 1000;
    stale = s.createSignedQueryString({ method: 'POST', path, body });
  } finally {
    Date.now = realNow;
  }
  const old = await send(stale, body);
  assert.equal(old.status, 401, `20-minute-old auth_timestamp: ${await old.text()}`);
  let future;
  try {
    Date.now = () => realNow() + 20 * 60 * 1000;
    future = s.createSignedQueryString({ method: 'POST', path, body });
  } finally {
    Date.now = realNow;
  }
  const ahead = await send(future, body);
  assert.equal(ahead.status, 401, `auth_timestamp 20 minutes ahead: ${await ahead.text()}`);
});

test('unknown app id: 404 with a JSON message', { timeout: 10000 }, async () => {
  assertError(await apiError(sdk({ appId: '999999' }).trigger(uniq('public-'), 'e', {})), 404);
});

test('data over 10 KiB: 413; exactly 10 KiB is delivered', { timeout: 10000 }, async () => {
  const ch = uniq('public-big-');
  const c = await connect({ name: 'c' });
  await c.subscribed(ch);
  const exact = 'x'.repeat(10 * 1024);
  const ok = await sdk().trigger(ch, 'big', exact);
  assert.equal(ok.status, 200);
  const ev = await c.waitEvent(ch, 'big');
  assert.equal(ev.data.length, 10 * 1024);

  assertError(await apiError(sdk().trigger(ch, 'too-big', 'x'.repeat(11 * 1024))), 413);
  assertError(await apiError(sdk().triggerBatch([{ channel: ch, name: 'too-big', data: 'y'.repeat(11 * 1024) }])), 413);
});

test('too many channels: 101 and 200 channels refused with 400, 100 accepted', { timeout: 10000 }, async () => {
  // The SDK refuses more than 100 channels itself, so post the body it would build.
  const names = (n) => Array.from({ length: n }, (_, i) => `many-${i}`);
  const post = (n) => sdk().post({ path: '/events', body: { name: 'e', data: '{}', channels: names(n) } });
  assert.equal((await post(100)).status, 200);
  assertError(await apiError(post(101)), 400);
  assertError(await apiError(post(200)), 400);
});

test('bad requests: 400 with a JSON message', { timeout: 10000 }, async () => {
  const s = sdk();
  // No name.
  assertError(await apiError(s.post({ path: '/events', body: { data: '{}', channels: ['a'] } })), 400);
  // No channel.
  assertError(await apiError(s.post({ path: '/events', body: { name: 'e', data: '{}' } })), 400);
  // Invalid channel name.
  assertError(await apiError(s.post({ path: '/events', body: { name: 'e', data: '{}', channels: ['bad name!'] } })), 400);
});

test('data that is not a string: refused with 400, or relayed byte for byte', { timeout: 10000 }, async () => {
  // PUSHER.md 2.1 says data is a string (the SDKs always send one). A server may refuse
  // anything else; if it accepts it, it must not re-encode it.
  const ch = uniq('public-');
  const c = await connect({ name: 'c' });
  await c.subscribed(ch);
  const body = { name: 'obj', data: { b: [1, 2], a: 'x' }, channels: [ch] };
  let res;
  try {
    res = await sdk().post({ path: '/events', body });
  } catch (e) {
    const r = await apiError(Promise.reject(e));
    assertError(r, 400);
    return;
  }
  assert.equal(res.status, 200);
  const frame = await c.waitFrame('obj', ch);
  assert.equal(JSON.stringify(JSON.parse(frame.raw).data), JSON.stringify(body.data));
  assert.ok(frame.raw.includes(JSON.stringify(body.data)), `data relayed as sent: ${frame.raw}`);
});
