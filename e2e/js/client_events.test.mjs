// Client events (client-*): relayed to the other subscribers of private and presence
// channels, never echoed, user_id on presence, refused elsewhere, rate limited.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, expectNone, sleep } from './lib.mjs';

afterEach(cleanup);

test('private channel: client event reaches the other subscriber, not the sender', { timeout: 10000 }, async () => {
  const ch = uniq('private-chat-');
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const chA = await a.subscribed(ch);
  const chB = await b.subscribed(ch);

  assert.equal(chA.trigger('client-typing', { who: 'a', n: 1 }), true);
  const ev = await b.waitEvent(ch, 'client-typing');
  assert.deepEqual(ev.data, { who: 'a', n: 1 });
  const [frame] = b.inbound('client-typing', ch);
  assert.equal(frame.user_id, undefined, 'no user_id on private channels');

  // The data is relayed as the client sent it, not re-encoded.
  const odd = { s: 'ünï "quoted" \\ \u2028', big: 12345678901234567890, f: 1.5e-7 };
  chA.trigger('client-bytes', odd);
  const relayed = await b.waitFrame('client-bytes', ch);
  const [sent] = a.outbound('client-bytes', ch);
  const sentData = sent.raw.slice(sent.raw.indexOf('"data":') + 7, sent.raw.lastIndexOf(',"channel"'));
  assert.ok(relayed.raw.includes(sentData), `data not relayed byte for byte:\n sent ${sent.raw}\n got  ${relayed.raw}`);

  // b answers; a gets the answer, and nothing of its own before it.
  chB.trigger('client-ack', { who: 'b' });
  await a.waitEvent(ch, 'client-ack');
  expectNone(a.frames, (f) => f.dir === 'in' && (f.event === 'client-typing' || f.event === 'client-bytes'), 'client event echoed to its sender');
  expectNone(b.frames, (f) => f.dir === 'in' && f.event === 'client-ack', 'client event echoed to its sender');
});

test('presence channel: client event carries the sender user_id as pusher-js metadata', { timeout: 10000 }, async () => {
  const ch = uniq('presence-game-');
  const a = await connect({ name: 'alice', user: { user_id: 'alice', user_info: {} } });
  const b = await connect({ name: 'bob', user: { user_id: 'bob', user_info: {} } });
  const chA = await a.subscribed(ch);
  const chB = await b.subscribed(ch);
  const got = new Promise((resolve) => chB.bind('client-move', (data, metadata) => resolve({ data, metadata })));

  chA.trigger('client-move', { x: 3, y: 4 });
  // The bind() callback above is what an app sees; the never-matching wait only bounds
  // the time and prints the wire if the event does not come.
  const timeout = b.waitEvent(ch, 'client-move', 5000, () => false);
  let data, metadata;
  try {
    ({ data, metadata } = await Promise.race([got, timeout]));
  } finally {
    timeout.cancel();
  }
  assert.deepEqual(data, { x: 3, y: 4 });
  assert.deepEqual(metadata, { user_id: 'alice' });
  const [frame] = b.inbound('client-move', ch);
  assert.equal(frame.user_id, 'alice', `top-level user_id in ${frame.raw}`);

  // A user_id injected by the sender is not trusted.
  a.pusher.connection.send(JSON.stringify({ event: 'client-spoof2', channel: ch, data: { x: 2 }, user_id: 'bob' }));
  const spoof = await b.waitFrame('client-spoof2', ch);
  assert.equal(spoof.user_id, 'alice', `sender-supplied user_id must be replaced: ${spoof.raw}`);
});

test('client event on a public channel is rejected', { timeout: 10000 }, async () => {
  const ch = uniq('public-');
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const chA = await a.subscribed(ch);
  await b.subscribed(ch);
  chA.trigger('client-nope', { x: 1 });
  await sleep(200);
  await sdk().trigger(ch, 'marker', {});
  await b.waitEvent(ch, 'marker');
  await a.waitEvent(ch, 'marker');
  expectNone(b.frames, (f) => f.dir === 'in' && f.event === 'client-nope', 'client event relayed on a public channel');
  assert.equal(a.state, 'connected', 'the sender stays connected');
  assert.equal(a.tap.sockets.length, 1);
});

test('client event from a connection not subscribed to the channel is rejected', { timeout: 10000 }, async () => {
  const ch = uniq('private-');
  const a = await connect({ name: 'outsider' });
  const b = await connect({ name: 'member' });
  await b.subscribed(ch);
  a.pusher.send_event('client-intrude', { x: 1 }, ch);
  await sleep(200);
  await sdk().trigger(ch, 'marker', {});
  await b.waitEvent(ch, 'marker');
  expectNone(b.frames, (f) => f.dir === 'in' && f.event === 'client-intrude', 'client event from a non-subscriber');
  assert.equal(a.state, 'connected');
});

test('client events over 10 per second: pusher:error 4301, the rest still delivered', { timeout: 10000 }, async () => {
  const ch = uniq('private-burst-');
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const chA = await a.subscribed(ch);
  await b.subscribed(ch);

  for (let i = 0; i < 20; i++) chA.trigger('client-burst', { i });
  const err = await a.waitError(4301);
  assert.equal(typeof err.message, 'string');
  const [errFrame] = a.inbound('pusher:error');
  assert.equal(errFrame.parsedData.code, 4301, errFrame.raw);

  await sleep(300);
  await sdk().trigger(ch, 'marker', {});
  await b.waitEvent(ch, 'marker');
  const n = b.received(ch, 'client-burst').length;
  assert.ok(n >= 1 && n <= 10, `b received ${n} of 20 client events in one burst, want 1..10`);
  // In order, no duplicates: the first n.
  assert.deepEqual(b.received(ch, 'client-burst').map((e) => e.data.i), [...Array(n).keys()]);
  // 4301 is not fatal: the connection stays, and after a second the budget is back.
  assert.equal(a.state, 'connected');
  assert.equal(a.tap.sockets.length, 1, 'no reconnect');
  await sleep(1100);
  chA.trigger('client-later', {});
  await b.waitEvent(ch, 'client-later');
});
