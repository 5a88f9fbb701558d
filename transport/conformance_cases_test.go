package transport

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// The conformance cases of groups 1-5, 7, 9 and 10 (see conformance_test.go). Ids
// follow Autobahn|Testsuite's numbering where a case of the same kind exists there;
// N.H.k marks Herald's own case k in group N. Sizes are scaled down where Autobahn's
// would make the suite slow, and the case says so.

// Herald is text only (doc.go): a binary message is refused with 1003 where Autobahn
// expects an echo.
const textOnly = " (Herald is text only: 1003, RFC 6455 7.4.1)"

// --- 1 framing ------------------------------------------------------------------------

func framingCases() []confCase {
	sizes := []int{0, 125, 126, 127, 128, 65535, 65536}
	var cs []confCase
	for i, n := range sizes {
		p := pattern(n)
		cs = append(cs, confCase{
			id: fmt.Sprintf("1.1.%d", i+1), rfc: "5.2, 5.6",
			desc: fmt.Sprintf("text message of %d bytes", n),
			send: oneWrite(fr(finText, p)), want: stays(echo(p)),
		})
	}
	p := pattern(65536)
	cs = append(cs, confCase{
		id: "1.1.8", rfc: "5.2, 5.6", desc: "text message of 65536 bytes in writes of 997 bytes",
		send: chopped(997, fr(finText, p)), want: stays(echo(p)),
	})
	for i, n := range sizes {
		cs = append(cs, confCase{
			id: fmt.Sprintf("1.2.%d", i+1), rfc: "5.6, 7.4.1",
			desc: fmt.Sprintf("binary message of %d bytes", n) + textOnly,
			send: oneWrite(fr(finBin, pattern(n))), want: closes(1003),
		})
	}
	cs = append(cs, confCase{
		id: "1.2.8", rfc: "5.6, 7.4.1", desc: "binary message of 65536 bytes in writes of 997 bytes" + textOnly,
		send: chopped(997, fr(finBin, p)), want: closes(1003),
	})

	unmasked := []byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}
	long16 := clientFrame(finText, []byte("hello"))
	long16 = append([]byte{finText, 0x80 | 126, 0, 5}, long16[2:]...) // length 5 in the 16-bit form
	p126 := pattern(126)
	long64 := clientFrame(finText, []byte(p126))
	long64 = append(binary.BigEndian.AppendUint64([]byte{finText, 0x80 | 127}, 126), long64[4:]...)
	zeroMask := append([]byte{finText, 0x80 | 5, 0, 0, 0, 0}, "hello"...)
	nonMinimal := "RFC 6455 5.2 binds the sender to the minimal length encoding without telling the receiver to fail"
	cs = append(cs,
		confCase{
			id: "1.H.1", rfc: "5.1, 5.3", desc: "unmasked text frame from the client",
			send: oneWrite(unmasked), want: closes(1002),
		},
		confCase{
			id: "1.H.2", rfc: "5.2", desc: "text of 5 bytes with its length in the 16-bit form",
			send: oneWrite(long16), want: stays(echo("hello")), alt: []outcome{closes(1002)}, why: nonMinimal,
		},
		confCase{
			id: "1.H.3", rfc: "5.2", desc: "text of 126 bytes with its length in the 64-bit form",
			send: oneWrite(long64), want: stays(echo(p126)), alt: []outcome{closes(1002)}, why: nonMinimal,
		},
		confCase{
			id: "1.H.4", rfc: "5.2", desc: "64-bit length with the most significant bit set (header only)",
			send: oneWrite(append(binary.BigEndian.AppendUint64([]byte{finText, 0x80 | 127}, 1<<63|5), testMask[:]...)),
			want: closes(1002), alt: []outcome{closes(1009)},
			why: "the length is also past any limit, so 1009 (RFC 6455 7.4.1) describes it too",
		},
		confCase{
			id: "1.H.5", rfc: "5.3", desc: "text frame whose masking key is all zero bytes",
			send: oneWrite(zeroMask), want: stays(echo("hello")),
		},
		confCase{
			id: "1.H.6", rfc: "5.2, 5.6", desc: "three text messages in one write",
			send: oneWrite(fr(finText, "one"), fr(finText, "two"), fr(finText, "three")),
			want: stays(echo("one"), echo("two"), echo("three")),
		},
		confCase{
			id: "1.H.7", rfc: "5.2, 5.6", desc: "text message of 300 bytes, written octet-wise",
			send: octetWise(fr(finText, pattern(300))), want: stays(echo(pattern(300))),
		},
		confCase{
			id: "1.H.8", rfc: "5.2", desc: "text of 65536 bytes, its 14-byte header written octet-wise, then the payload",
			send: append(octetWise(fr(finText, p)[:14]), confWrite{b: fr(finText, p)[14:]}), want: stays(echo(p)),
		},
	)
	return cs
}

// --- 2 pings and pongs ----------------------------------------------------------------

// idleWait is how long 2.H.1 stays quiet after its pong: past the idle server's
// PongTimeout (and a 100 ms timer tick), short of its next IdleTimeout.
const idleWait = confPong + 150*time.Millisecond

func pingCases() []confCase {
	bin := "\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
	p125 := strings.Repeat("\xfe", 125)
	var ten []string
	for i := range 10 {
		ten = append(ten, fmt.Sprintf("payload-%d", i))
	}
	tenPings := func() (frames [][]byte, wants []want) {
		for i, p := range ten {
			frames = append(frames, fr(finPing, p))
			if i < len(ten)-1 {
				wants = append(wants, maybePong(p))
			} else {
				wants = append(wants, pong(p))
			}
		}
		return frames, wants
	}
	tf, tw := tenPings()
	return []confCase{
		{id: "2.1", rfc: "5.5.2, 5.5.3", desc: "ping without payload",
			send: oneWrite(fr(finPing, "")), want: stays(pong(""))},
		{id: "2.2", rfc: "5.5.2, 5.5.3", desc: "ping with a short text payload",
			send: oneWrite(fr(finPing, "Hello, world!")), want: stays(pong("Hello, world!"))},
		{id: "2.3", rfc: "5.5.2, 5.5.3", desc: "ping with a short binary payload",
			send: oneWrite(fr(finPing, bin)), want: stays(pong(bin))},
		{id: "2.4", rfc: "5.5, 5.5.3", desc: "ping with a payload of 125 bytes",
			send: oneWrite(fr(finPing, p125)), want: stays(pong(p125))},
		{id: "2.5", rfc: "5.5", desc: "ping with a payload of 126 bytes",
			send: oneWrite(fr(finPing, p125+"\xfe")), want: closes(1002)},
		{id: "2.6", rfc: "5.5.2, 5.5.3", desc: "ping with a payload of 125 bytes, written octet-wise",
			send: octetWise(fr(finPing, p125)), want: stays(pong(p125))},
		{id: "2.7", rfc: "5.5.3", desc: "unsolicited pong without payload: no answer",
			send: oneWrite(fr(finPong, "")), want: stays()},
		{id: "2.8", rfc: "5.5.3", desc: "unsolicited pong with payload: no answer",
			send: oneWrite(fr(finPong, "unsolicited pong payload")), want: stays()},
		{id: "2.9", rfc: "5.5.3", desc: "unsolicited pong, then a ping: only the ping is answered",
			send: oneWrite(fr(finPong, "unsolicited pong payload"), fr(finPing, "ping payload")),
			want: stays(pong("ping payload"))},
		{id: "2.10", rfc: "5.5.3", desc: "10 pings in one write",
			send: oneWrite(tf...), want: stays(tw...)},
		{id: "2.11", rfc: "5.5.3", desc: "10 pings, written octet-wise",
			send: octetWise(tf...), want: stays(tw...)},
		// The idle check (doc.go): after IdleTimeout of silence the handler's OnIdle
		// sends "idle"; any input within PongTimeout keeps the connection, here an
		// unsolicited pong, a heartbeat in RFC 6455 5.5.3's words.
		{id: "2.H.1", rfc: "5.5.3", server: srvIdle,
			desc: fmt.Sprintf("unsolicited pong after the idle check: still open %v later, past PongTimeout (%v)", idleWait, confPong),
			send: []confWrite{{b: fr(finPong, "heartbeat"), await: 1}, {b: nil, pause: idleWait}},
			want: stays(echo("idle"))},
		{id: "2.H.2", rfc: "5.5.3, 7.4.1", server: srvIdle, desc: "no answer to the idle check: closed with 1001 after PongTimeout",
			send: []confWrite{{b: nil}}, want: closes(1001, echo("idle"))},
	}
}

// --- 3 reserved bits ------------------------------------------------------------------

func reservedBitCases() []confCase {
	hello := "Hello, world!"
	return []confCase{
		{id: "3.1", rfc: "5.2", desc: "text with RSV1 set",
			send: oneWrite(fr(finText|rsv1, hello)), want: closes(1002)},
		{id: "3.2", rfc: "5.2", desc: "text, then text with RSV2 set, then a ping: echo, close, no pong",
			send: oneWrite(fr(finText, hello), fr(finText|rsv2, hello), fr(finPing, "")), want: closes(1002, echo(hello))},
		{id: "3.3", rfc: "5.2", desc: "text, then text with RSV1+RSV2 set, then a ping, a write per frame",
			send: frameWise(fr(finText, hello), fr(finText|rsv1|rsv2, hello), fr(finPing, "")), want: closes(1002, echo(hello))},
		{id: "3.4", rfc: "5.2", desc: "text, then text with RSV3 set, then a ping, written octet-wise",
			send: octetWise(fr(finText, hello), fr(finText|rsv3, hello), fr(finPing, "")), want: closes(1002, echo(hello))},
		{id: "3.5", rfc: "5.2", desc: "binary with RSV1+RSV3 set",
			send: oneWrite(fr(finBin|rsv1|rsv3, "\x00\xff\xfe\xfd")), want: closes(1002), alt: []outcome{closes(1003)},
			why: "the frame is binary as well, which Herald refuses with 1003 (RFC 6455 7.4.1)"},
		{id: "3.6", rfc: "5.2", desc: "ping with RSV2+RSV3 set",
			send: oneWrite(fr(finPing|rsv2|rsv3, hello)), want: closes(1002)},
		{id: "3.7", rfc: "5.2", desc: "close with RSV1+RSV2+RSV3 set",
			send: oneWrite(clientFrame(finClose|rsv1|rsv2|rsv3, closePayload(1000, ""))), want: closes(1002)},
		{id: "3.H.1", rfc: "5.2, 5.4", desc: "continuation with RSV1 set inside a fragmented text",
			send: oneWrite(fr(fragText, "frag"), fr(finCont|rsv1, "ment")), want: closes(1002)},
	}
}

// --- 4 opcodes ------------------------------------------------------------------------

func opcodeCases() []confCase {
	var cs []confCase
	hello := "Hello, world!"
	for gi, base := range []byte{3, 11} {
		g := fmt.Sprintf("4.%d.", gi+1)
		kind := "reserved non-control"
		if base >= 8 {
			kind = "reserved control"
		}
		op := func(k int) byte { return 0x80 | (base + byte(k)) }
		cs = append(cs,
			confCase{id: g + "1", rfc: "5.2", desc: fmt.Sprintf("%s opcode %d", kind, base),
				send: oneWrite(fr(op(0), "")), want: closes(1002)},
			confCase{id: g + "2", rfc: "5.2", desc: fmt.Sprintf("%s opcode %d with a payload", kind, base+1),
				send: oneWrite(fr(op(1), "reserved opcode payload")), want: closes(1002)},
			confCase{id: g + "3", rfc: "5.2", desc: fmt.Sprintf("text, %s opcode %d, ping: echo, close, no pong", kind, base+2),
				send: oneWrite(fr(finText, hello), fr(op(2), ""), fr(finPing, "")), want: closes(1002, echo(hello))},
			confCase{id: g + "4", rfc: "5.2", desc: fmt.Sprintf("text, %s opcode %d with a payload, ping, a write per frame", kind, base+3),
				send: frameWise(fr(finText, hello), fr(op(3), "reserved opcode payload"), fr(finPing, "")), want: closes(1002, echo(hello))},
			confCase{id: g + "5", rfc: "5.2", desc: fmt.Sprintf("text, %s opcode %d with a payload, ping, written octet-wise", kind, base+4),
				send: octetWise(fr(finText, hello), fr(op(4), "reserved opcode payload"), fr(finPing, "")), want: closes(1002, echo(hello))},
		)
	}
	cs = append(cs, confCase{id: "4.H.1", rfc: "5.2, 5.4", desc: "reserved opcode 3 between the fragments of a text",
		send: oneWrite(fr(fragText, "frag"), fr(0x03, "x"), fr(finCont, "ment")), want: closes(1002)})
	return cs
}

// --- 5 fragmentation ------------------------------------------------------------------

func fragmentationCases() []confCase {
	two := fragments("fragment1", "fragment2")
	withPing := [][]byte{two[0], fr(finPing, "pongme 2!"), two[1]}
	orphanFin := [][]byte{fr(finCont, "non-continuation payload"), fr(finText, "Hello, world!")}
	orphan := [][]byte{fr(fragCont, "non-continuation payload"), fr(finText, "Hello, world!")}
	five := fragments("fragment1", "fragment2", "fragment3", "fragment4", "fragment5")
	pause := 20 * time.Millisecond
	// Each ping must be answered before the message goes on (await), not when it ends.
	fiveSlow := []confWrite{
		{b: five[0]}, {b: five[1], pause: pause},
		{b: fr(finPing, "pongme 1!"), pause: pause}, {b: five[2], pause: pause, await: 1},
		{b: five[3], pause: pause}, {b: fr(finPing, "pongme 2!"), pause: pause},
		{b: five[4], pause: pause, await: 2},
	}
	fiveOctets := octetWise(five[0], five[1], fr(finPing, "pongme 1!"), five[2], five[3], fr(finPing, "pongme 2!"), five[4])
	sec := "5.4"
	return []confCase{
		{id: "5.1", rfc: "5.4, 5.5", desc: "ping in 2 fragments",
			send: oneWrite(fr(fragPing, "fragment1"), fr(finCont, "fragment2")), want: closes(1002)},
		{id: "5.2", rfc: "5.4, 5.5", desc: "pong in 2 fragments",
			send: oneWrite(fr(0x0a, "fragment1"), fr(finCont, "fragment2")), want: closes(1002)},
		{id: "5.3", rfc: sec, desc: "text in 2 fragments",
			send: oneWrite(two...), want: stays(echo("fragment1fragment2"))},
		{id: "5.4", rfc: sec, desc: "text in 2 fragments, a write per frame",
			send: frameWise(two...), want: stays(echo("fragment1fragment2"))},
		{id: "5.5", rfc: sec, desc: "text in 2 fragments, written octet-wise",
			send: octetWise(two...), want: stays(echo("fragment1fragment2"))},
		{id: "5.6", rfc: "5.4, 5.5", desc: "text in 2 fragments with a ping between them",
			send: oneWrite(withPing...), want: stays(pong("pongme 2!"), echo("fragment1fragment2"))},
		{id: "5.7", rfc: "5.4, 5.5", desc: "text in 2 fragments with a ping between them, a write per frame",
			send: frameWise(withPing...), want: stays(pong("pongme 2!"), echo("fragment1fragment2"))},
		{id: "5.8", rfc: "5.4, 5.5", desc: "text in 2 fragments with a ping between them, written octet-wise",
			send: octetWise(withPing...), want: stays(pong("pongme 2!"), echo("fragment1fragment2"))},
		{id: "5.9", rfc: sec, desc: "continuation with FIN and nothing to continue, then text",
			send: oneWrite(orphanFin...), want: closes(1002)},
		{id: "5.10", rfc: sec, desc: "continuation with FIN and nothing to continue, then text, a write per frame",
			send: frameWise(orphanFin...), want: closes(1002)},
		{id: "5.11", rfc: sec, desc: "continuation with FIN and nothing to continue, then text, written octet-wise",
			send: octetWise(orphanFin...), want: closes(1002)},
		{id: "5.12", rfc: sec, desc: "continuation without FIN and nothing to continue, then text",
			send: oneWrite(orphan...), want: closes(1002)},
		{id: "5.13", rfc: sec, desc: "continuation without FIN and nothing to continue, then text, a write per frame",
			send: frameWise(orphan...), want: closes(1002)},
		{id: "5.14", rfc: sec, desc: "continuation without FIN and nothing to continue, then text, written octet-wise",
			send: octetWise(orphan...), want: closes(1002)},
		{id: "5.15", rfc: sec, desc: "text in 2 fragments, then a continuation with nothing to continue, then text in 2 fragments",
			send: oneWrite(fr(fragText, "fragment1"), fr(finCont, "fragment2"), fr(fragCont, "fragment3"), fr(finCont, "fragment4"),
				fr(fragText, "fragment5"), fr(finCont, "fragment6")),
			want: closes(1002, echo("fragment1fragment2"))},
		{id: "5.16", rfc: sec, desc: "twice: continuation without FIN and nothing to continue, then text in 2 fragments",
			send: oneWrite(fr(fragCont, "fragment1"), fr(fragText, "fragment2"), fr(finCont, "fragment3"),
				fr(fragCont, "fragment4"), fr(fragText, "fragment5"), fr(finCont, "fragment6")),
			want: closes(1002)},
		{id: "5.17", rfc: sec, desc: "twice: continuation with FIN and nothing to continue, then text in 2 fragments",
			send: oneWrite(fr(finCont, "fragment1"), fr(fragText, "fragment2"), fr(finCont, "fragment3"),
				fr(finCont, "fragment4"), fr(fragText, "fragment5"), fr(finCont, "fragment6")),
			want: closes(1002)},
		{id: "5.18", rfc: sec, desc: "text in 2 fragments, both with the text opcode",
			send: oneWrite(fr(fragText, "fragment1"), fr(finText, "fragment2")), want: closes(1002)},
		{id: "5.19", rfc: "5.4, 5.5", desc: "text in 5 fragments with pings after the 2nd and 4th, each answered before the next fragment, 20 ms between writes",
			send: fiveSlow, want: stays(pong("pongme 1!"), pong("pongme 2!"), echo("fragment1fragment2fragment3fragment4fragment5"))},
		{id: "5.20", rfc: "5.4, 5.5", desc: "text in 5 fragments with pings after the 2nd and 4th, written octet-wise",
			send: fiveOctets, want: stays(pong("pongme 1!"), pong("pongme 2!"), echo("fragment1fragment2fragment3fragment4fragment5"))},
		{id: "5.H.1", rfc: "5.4, 5.5", desc: "text in 3 fragments with an unsolicited pong between them",
			send: oneWrite(fr(fragText, "a"), fr(finPong, "x"), fr(fragCont, "b"), fr(finCont, "c")), want: stays(echo("abc"))},
		{id: "5.H.2", rfc: "5.4, 5.6", desc: "binary fragment, then a continuation" + textOnly,
			send: oneWrite(fr(fragBin, "\x00\x01"), fr(finCont, "\x02")), want: closes(1003)},
		{id: "5.H.3", rfc: "5.4", desc: "text fragment, then binary inside it",
			send: oneWrite(fr(fragText, "a"), fr(finBin, "\x00")), want: closes(1002), alt: []outcome{closes(1003)},
			why: "the frame is binary as well, which Herald refuses with 1003 (RFC 6455 7.4.1)"},
		{id: "5.H.4", rfc: "5.4, 5.5", desc: "text in 2 fragments with 3 pings between them",
			send: oneWrite(fr(fragText, "a"), fr(finPing, "1"), fr(finPing, "2"), fr(finPing, "3"), fr(finCont, "b")),
			want: stays(maybePong("1"), maybePong("2"), pong("3"), echo("ab"))},
	}
}

// --- 7 close handling -----------------------------------------------------------------

func closeCases() []confCase {
	hello := "Hello World!"
	r123 := strings.Repeat("*", 123)
	cs := []confCase{
		{id: "7.1.1", rfc: "7.1.2, 5.5.1", desc: "text, then close 1000: echo, then the close echoed",
			send: oneWrite(fr(finText, hello), closeFr(1000, "")), want: closes(1000, echo(hello))},
		{id: "7.1.2", rfc: "5.5.1", desc: "two close frames: one close back, then the TCP close",
			send: oneWrite(closeFr(1000, ""), closeFr(1000, "")), want: closes(1000)},
		{id: "7.1.3", rfc: "5.5.1", desc: "close, then a ping: no pong after the close",
			send: oneWrite(closeFr(1000, ""), fr(finPing, hello)), want: closes(1000)},
		{id: "7.1.4", rfc: "5.5.1", desc: "close, then text: no echo after the close",
			send: oneWrite(closeFr(1000, ""), fr(finText, hello)), want: closes(1000)},
		{id: "7.1.5", rfc: "5.5.1, 5.4", desc: "text fragment, close, continuation: no message",
			send: oneWrite(fr(fragText, "fragment1"), closeFr(1000, ""), fr(finCont, "fragment2")), want: closes(1000)},
		{id: "7.1.6", rfc: "5.5.1", desc: "text of 60 KiB, close, ping (scaled from 256 KiB to fit the default 64 KiB limit)",
			send: oneWrite(fr(finText, pattern(60<<10)), closeFr(1000, ""), fr(finPing, hello)),
			want: closes(1000, echo(pattern(60<<10))), alt: []outcome{closes(1000)},
			why: "RFC 6455 5.5.1 lets a server that has received a close stop sending data"},
		{id: "7.3.1", rfc: "5.5.1, 7.1.5", desc: "close without payload",
			send: oneWrite(fr(finClose, "")), want: closesAny([]uint16{0, 1000})},
		{id: "7.3.2", rfc: "5.5.1", desc: "close with a payload of 1 byte",
			send: oneWrite(fr(finClose, "*")), want: closes(1002)},
		{id: "7.3.3", rfc: "5.5.1, 7.4.1", desc: "close 1000 without reason",
			send: oneWrite(closeFr(1000, "")), want: closes(1000)},
		{id: "7.3.4", rfc: "5.5.1, 7.4.1", desc: "close 1000 with a reason",
			send: oneWrite(closeFr(1000, hello)), want: closes(1000)},
		{id: "7.3.5", rfc: "5.5, 5.5.1", desc: "close 1000 with a reason of 123 bytes (payload 125)",
			send: oneWrite(closeFr(1000, r123)), want: closes(1000)},
		{id: "7.3.6", rfc: "5.5", desc: "close 1000 with a reason of 124 bytes (payload 126)",
			send: oneWrite(closeFr(1000, r123+"*")), want: closes(1002)},
		{id: "7.5.1", rfc: "5.5.1, 8.1", desc: "close 1000 with a reason of invalid UTF-8",
			send: oneWrite(closeFr(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")), want: closes(1007)},
		{id: "7.H.1", rfc: "5.5.1", desc: "close 1000 with a reason, written octet-wise",
			send: octetWise(closeFr(1000, hello)), want: closes(1000)},
		{id: "7.H.2", rfc: "5.5.1, 8.1", desc: "close 1000 with a reason of 123 bytes of valid multi-byte UTF-8",
			send: oneWrite(closeFr(1000, strings.Repeat("€", 41))), want: closes(1000)},
		{id: "7.H.3", rfc: "7.1.1, 7.1.7", desc: "the server fails the connection (bad opcode) and closes the TCP connection without waiting for the client",
			send: oneWrite(fr(0x83, "")), want: closes(1002)},
	}
	echoOr1000 := "RFC 6455 5.5.1: a server typically echoes the code it received; 1000 is also an answer"
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cs = append(cs, confCase{
			id: fmt.Sprintf("7.7.%d", i+1), rfc: "7.4.1, 7.4.2", desc: fmt.Sprintf("close with valid code %d", code),
			send: oneWrite(closeFr(code, "")), want: closesAny([]uint16{code, 1000}), why: echoOr1000,
		})
	}
	for i, code := range []uint16{1012, 1013, 1014} {
		cs = append(cs, confCase{
			id: fmt.Sprintf("7.H.%d", 4+i), rfc: "7.4.2", desc: fmt.Sprintf("close with code %d (registered with IANA after RFC 6455)", code),
			send: oneWrite(closeFr(code, "")), want: closesAny([]uint16{code, 1000}),
			alt: []outcome{closes(1002)},
			why: "RFC 6455 7.4.2 reserves 1000-2999 for the protocol and its registry; a server that knows only RFC 6455's codes refuses it",
		})
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999} {
		cs = append(cs, confCase{
			id: fmt.Sprintf("7.9.%d", i+1), rfc: "7.4.1, 7.4.2", desc: fmt.Sprintf("close with invalid code %d", code),
			send: oneWrite(closeFr(code, "")), want: closes(1002),
		})
	}
	cs = append(cs, confCase{
		id: "7.H.7", rfc: "7.4.1", desc: "close with code 1015 (never sent in a close frame)",
		send: oneWrite(closeFr(1015, "")), want: closes(1002),
	})
	for i, code := range []uint16{5000, 65535} {
		cs = append(cs, confCase{
			id: fmt.Sprintf("7.13.%d", i+1), rfc: "7.4.2", desc: fmt.Sprintf("close with code %d, out of range", code),
			send: oneWrite(closeFr(code, "")), want: closes(1002),
		})
	}
	return cs
}

// --- 9 limits -------------------------------------------------------------------------

// limitCases run against a server whose MaxMessageBytes is confLimit (16 KiB):
// Autobahn's sizes (up to 16 MiB) scaled to it.
func limitCases() []confCase {
	lim := confLimit
	full := pattern(lim)
	over := pattern(lim + 1)
	var cs []confCase
	add := func(c confCase) {
		c.server = srvLimits
		cs = append(cs, c)
	}
	for i, n := range []int{1 << 10, 4 << 10, lim - 1, lim} {
		p := pattern(n)
		add(confCase{id: fmt.Sprintf("9.1.%d", i+1), rfc: "10.4, 5.6", desc: fmt.Sprintf("text of %d bytes (limit %d)", n, lim),
			send: oneWrite(fr(finText, p)), want: stays(echo(p))})
	}
	add(confCase{id: "9.2.1", rfc: "10.4, 7.4.1", desc: "binary of 1024 bytes" + textOnly,
		send: oneWrite(fr(finBin, pattern(1024))), want: closes(1003)})
	for i, n := range []int{1, 4, 16, 64, 256, 1024, 4096, lim} {
		var parts []string
		for off := 0; off < lim; off += n {
			parts = append(parts, full[off:min(off+n, lim)])
		}
		add(confCase{id: fmt.Sprintf("9.3.%d", i+1), rfc: "10.4, 5.4", desc: fmt.Sprintf("text of %d bytes (the limit) in fragments of %d bytes", lim, n),
			send: oneWrite(fragments(parts...)...), want: stays(echo(full))})
	}
	for i, n := range []int{64, 128, 256, 512, 1024, 2048} {
		add(confCase{id: fmt.Sprintf("9.5.%d", i+1), rfc: "10.4, 5.2", desc: fmt.Sprintf("text of %d bytes in writes of %d bytes", lim, n),
			send: chopped(n, fr(finText, full)), want: stays(echo(full))})
	}
	for i, m := range []struct{ count, size int }{{1000, 0}, {1000, 16}, {1000, 64}, {1000, 256}, {250, 1024}, {50, 4096}} {
		var frames [][]byte
		var wants []want
		for k := range m.count {
			p := pattern(m.size)
			if m.size >= 6 {
				p = fmt.Sprintf("%06d", k) + p[6:] // numbered, so that a lost or reordered echo shows
			}
			frames = append(frames, fr(finText, p))
			wants = append(wants, echo(p))
		}
		add(confCase{id: fmt.Sprintf("9.7.%d", i+1), rfc: "10.4, 5.6",
			desc: fmt.Sprintf("%d text messages of %d bytes in one write (Autobahn sends them one at a time)", m.count, m.size),
			send: oneWrite(frames...), want: stays(wants...)})
	}
	half := lim / 2
	add(confCase{id: "9.H.1", rfc: "10.4, 7.4.1", desc: fmt.Sprintf("text of %d bytes, one past the limit", lim+1),
		send: oneWrite(fr(finText, over)), want: closes(1009)})
	add(confCase{id: "9.H.2", rfc: "10.4, 7.4.1", desc: "header of a text of 2^40 bytes, without its payload: refused from the header",
		send: oneWrite(clientFrameLen(finText, nil, 1<<40)[:14]), want: closes(1009)})
	add(confCase{id: "9.H.3", rfc: "10.4, 7.4.1", desc: fmt.Sprintf("header of a text of %d bytes, without its payload: refused from the header", lim+1),
		send: oneWrite(clientFrameLen(finText, nil, lim+1)[:8]), want: closes(1009)})
	add(confCase{id: "9.H.4", rfc: "10.4, 5.4", desc: fmt.Sprintf("text in 2 fragments of %d and %d bytes, one past the limit together", half, half+1),
		send: oneWrite(fragments(over[:half], over[half:])...), want: closes(1009)})
	add(confCase{id: "9.H.5", rfc: "10.4, 5.4", desc: fmt.Sprintf("text in 3 fragments: %d bytes, then the header of a continuation one past the limit", half),
		send: oneWrite(fr(fragText, over[:half]), clientFrameLen(finCont, nil, half+1)[:8]), want: closes(1009)})
	add(confCase{id: "9.H.6", rfc: "10.4, 5.5", desc: "text at the limit in 2 fragments with a ping of 125 bytes between them (control frames do not count)",
		send: oneWrite(fr(fragText, full[:half]), fr(finPing, pattern(125)), fr(finCont, full[half:])),
		want: stays(pong(pattern(125)), echo(full))})
	add(confCase{id: "9.H.7", rfc: "10.4, 5.4", desc: "text at the limit, then an empty continuation",
		send: oneWrite(fr(fragText, full), fr(finCont, "")), want: stays(echo(full))})
	add(confCase{id: "9.H.8", rfc: "10.4, 5.6", desc: "two texts at the limit back to back (the limit is per message)",
		send: oneWrite(fr(finText, full), fr(finText, full)), want: stays(echo(full), echo(full))})
	return cs
}

// --- 10 misc --------------------------------------------------------------------------

func miscCases() []confCase {
	p := pattern(65536)
	return []confCase{
		{id: "10.1.1", rfc: "5.4", desc: "text of 65536 bytes: the echo may be fragmented but must be the same message",
			send: oneWrite(fr(finText, p)), want: stays(echo(p))},
		{id: "10.H.1", rfc: "5.4", desc: "text of 65536 bytes in 64 fragments: the same message back however it is framed",
			send: oneWrite(fragments(splitN(p, 64)...)...), want: stays(echo(p))},
	}
}

// splitN cuts s into n parts of (nearly) equal length.
func splitN(s string, n int) []string {
	var parts []string
	for i := range n {
		parts = append(parts, s[i*len(s)/n:(i+1)*len(s)/n])
	}
	return parts
}
