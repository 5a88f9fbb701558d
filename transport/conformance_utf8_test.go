package transport

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Group 6 of the conformance suite (see conformance_test.go): UTF-8 in text messages,
// RFC 6455 8.1 and 5.6. A valid message is echoed; an invalid one fails the
// connection with 1007. 6.5 onwards walk the categories of Markus Kuhn's UTF-8
// decoder stress test, as Autobahn does; each sequence is sent twice, in one frame
// (6.x.y) and split into one fragment per byte (6.x.y-f), so that every code point
// is also split across fragments at every byte.

// kosme is the Greek word "κόσμε", the stress test's sample text.
const kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"

type utf8Seq struct {
	id, desc string
	b        string
	valid    bool
}

func utf8Cases() []confCase {
	sec := "8.1, 5.6"
	hello := "Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!!"
	bad := kosme + "\xed\xa0\x80edited" // a lone surrogate inside valid text
	cs := []confCase{
		{id: "6.1.1", rfc: sec, desc: "empty text message",
			send: oneWrite(fr(finText, "")), want: stays(echo(""))},
		{id: "6.1.2", rfc: "5.4, 5.6", desc: "text in 3 empty fragments",
			send: oneWrite(fragments("", "", "")...), want: stays(echo(""))},
		{id: "6.1.3", rfc: "5.4, 5.6", desc: "text in 3 fragments: empty, non-empty, empty",
			send: oneWrite(fragments("", "middle frame payload", "")...), want: stays(echo("middle frame payload"))},
		{id: "6.2.1", rfc: sec, desc: "valid UTF-8 with 2-byte code points in one frame",
			send: oneWrite(fr(finText, hello)), want: stays(echo(hello))},
		{id: "6.2.2", rfc: sec, desc: "valid UTF-8 in 2 fragments split at a code point boundary",
			send: oneWrite(fragments(hello[:8], hello[8:])...), want: stays(echo(hello))},
		{id: "6.2.3", rfc: sec, desc: "valid UTF-8 in one frame, written octet-wise",
			send: octetWise(fr(finText, hello)), want: stays(echo(hello))},
		{id: "6.2.4", rfc: sec, desc: "valid UTF-8 (κόσμε) in one fragment per byte, written octet-wise",
			send: octetWise(byteFragments(kosme)...), want: stays(echo(kosme))},
		{id: "6.3.1", rfc: sec, desc: "invalid UTF-8 (a surrogate) in one frame",
			send: oneWrite(fr(finText, bad)), want: closes(1007)},
		{id: "6.3.2", rfc: sec, desc: "invalid UTF-8 (a surrogate) in one fragment per byte, written octet-wise",
			send: octetWise(byteFragments(bad)...), want: closes(1007)},
	}

	// 6.4: fail fast or at the end. The invalid bytes go first, the rest 50 ms later.
	failFast := func(id, desc string, writes ...[]byte) confCase {
		w := make([]confWrite, len(writes))
		for i, b := range writes {
			w[i] = confWrite{b: b}
			if i > 0 {
				w[i].pause = 50 * time.Millisecond
			}
		}
		return confCase{id: id, rfc: sec, desc: desc, send: w, want: closes(1007), failFast: true}
	}
	past := "\xf4\x90\x80\x80" // U+110000, past the last code point
	one := fr(finText, kosme+past+"edited")
	cs = append(cs,
		failFast("6.4.1", "fragment with a code point past U+10FFFF, then the final fragment",
			fr(fragText, kosme+past), fr(finCont, "edited")),
		failFast("6.4.2", "valid fragment ending in a lead byte, a fragment whose byte makes it invalid, then the rest",
			fr(fragText, kosme+past[:1]), fr(fragCont, past[1:2]), fr(finCont, past[2:]+"edited")),
		failFast("6.4.3", "one frame written in 3 parts: up to the invalid code point, the code point, the rest",
			one[:6+len(kosme)], one[6+len(kosme):6+len(kosme)+4], one[6+len(kosme)+4:]),
		failFast("6.4.4", "one frame written in 3 parts, the invalid code point split between the first two",
			one[:6+len(kosme)+1], one[6+len(kosme)+1:6+len(kosme)+4], one[6+len(kosme)+4:]),
	)

	for _, s := range utf8Sequences() {
		want := stays(echo(s.b))
		if !s.valid {
			want = closes(1007)
		}
		validity := "valid"
		if !s.valid {
			validity = "invalid"
		}
		cs = append(cs,
			confCase{id: s.id, rfc: sec, desc: fmt.Sprintf("%s: %s in one frame", validity, s.desc),
				send: oneWrite(fr(finText, s.b)), want: want},
			confCase{id: s.id + "-f", rfc: "8.1, 5.4", desc: fmt.Sprintf("%s: %s in one fragment per byte", validity, s.desc),
				send: oneWrite(byteFragments(s.b)...), want: want},
		)
	}

	// κόσμε in 2 fragments, split at every byte.
	for i := 1; i < len(kosme); i++ {
		cs = append(cs, confCase{id: fmt.Sprintf("6.H.%d", i), rfc: "8.1, 5.4",
			desc: fmt.Sprintf("κόσμε in 2 fragments split after byte %d", i),
			send: oneWrite(fragments(kosme[:i], kosme[i:])...), want: stays(echo(kosme))})
	}
	n := len(kosme)
	cs = append(cs,
		confCase{id: fmt.Sprintf("6.H.%d", n), rfc: "8.1, 5.4",
			desc: "a 4-byte code point in 4 fragments, a write per fragment",
			send: frameWise(byteFragments("\xf0\x9f\x98\x80")...), want: stays(echo("\xf0\x9f\x98\x80"))},
		confCase{id: fmt.Sprintf("6.H.%d", n+1), rfc: "8.1, 5.4",
			desc: "text ending in the first 2 bytes of a 3-byte code point (the rest never comes)",
			send: oneWrite(fragments("ok ", "\xe2\x82")...), want: closes(1007)},
		confCase{id: fmt.Sprintf("6.H.%d", n+2), rfc: "8.1, 5.4",
			desc: "each fragment valid alone, the message not: a code point's lead byte then another lead byte",
			send: oneWrite(fragments("ok \xe2\x82", "\xe2\x82\xac")...), want: closes(1007)},
	)
	return cs
}

// utf8Sequences are the byte sequences of the stress test's categories, with whether
// each is valid UTF-8 (RFC 3629: no surrogates, nothing past U+10FFFF, no overlong
// forms, no 5- or 6-byte forms).
func utf8Sequences() []utf8Seq {
	var seqs []utf8Seq
	add := func(section string, valid bool, desc string, bs ...string) {
		for i, b := range bs {
			d := desc
			if len(bs) > 1 {
				d = fmt.Sprintf("%s % x", desc, b)
				if len(b) > 12 {
					d = fmt.Sprintf("%s (%d bytes)", desc, len(b))
				}
			}
			seqs = append(seqs, utf8Seq{id: fmt.Sprintf("%s.%d", section, i+1), desc: d, b: b, valid: valid})
		}
	}
	// 6.5: valid text.
	add("6.5", true, "text", "hello$world", "hello\u00a2world", "hello\u20acworld", "hello\U00024b62world", kosme)
	// 6.6: κόσμε cut after each byte; valid only at a code point boundary.
	for i := 1; i <= len(kosme); i++ {
		p := kosme[:i]
		seqs = append(seqs, utf8Seq{id: fmt.Sprintf("6.6.%d", i), desc: fmt.Sprintf("the first %d bytes of κόσμε", i), b: p,
			valid: i == 2 || i == 5 || i == 7 || i == 9 || i == 11})
	}
	add("6.7", true, "first code point of its length", "\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80")
	add("6.8", false, "first 5- and 6-byte forms", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80")
	add("6.9", true, "last code point of its length", "\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf")
	add("6.10", false, "past U+10FFFF: last 4-, 5- and 6-byte forms", "\xf7\xbf\xbf\xbf", "\xfb\xbf\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf\xbf")
	// 6.11: boundaries; U+110000 is the one invalid.
	add("6.11", true, "boundary code point", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf")
	seqs = append(seqs, utf8Seq{id: "6.11.5", desc: "U+110000", b: "\xf4\x90\x80\x80"})
	// 6.12: continuation bytes with no lead byte.
	var allCont strings.Builder
	for b := 0x80; b <= 0xbf; b++ {
		allCont.WriteByte(byte(b))
	}
	add("6.12", false, "unexpected continuation bytes", "\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80",
		"\x80\xbf\x80\xbf", "\x80\xbf\x80\xbf\x80", "\x80\xbf\x80\xbf\x80\xbf", allCont.String())
	// 6.13: every lead byte of each length, each followed by a space.
	lonely := func(from, to int) string {
		var sb strings.Builder
		for b := from; b <= to; b++ {
			sb.WriteByte(byte(b))
			sb.WriteByte(' ')
		}
		return sb.String()
	}
	add("6.13", false, "lone lead bytes, each followed by a space",
		lonely(0xc0, 0xdf), lonely(0xe0, 0xef), lonely(0xf0, 0xf7), lonely(0xf8, 0xfb), lonely(0xfc, 0xfd))
	// 6.14: the last continuation byte missing.
	missing := []string{"\xc0", "\xe0\x80", "\xf0\x80\x80", "\xf8\x80\x80\x80", "\xfc\x80\x80\x80\x80",
		"\xdf", "\xef\xbf", "\xf7\xbf\xbf", "\xfb\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf"}
	add("6.14", false, "sequence with its last byte missing", missing...)
	add("6.15", false, "all the sequences of 6.14 concatenated", strings.Join(missing, ""))
	add("6.16", false, "bytes that never appear in UTF-8", "\xfe", "\xff", "\xfe\xfe\xff\xff")
	add("6.17", false, "overlong '/'", "\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xfc\x80\x80\x80\x80\xaf")
	add("6.18", false, "largest overlong form of its length", "\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf8\x87\xbf\xbf\xbf", "\xfc\x83\xbf\xbf\xbf\xbf")
	add("6.19", false, "overlong NUL", "\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xf8\x80\x80\x80\x80", "\xfc\x80\x80\x80\x80\x80")
	add("6.20", false, "single UTF-16 surrogate", "\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf",
		"\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf")
	var pairs []string
	for _, hi := range []string{"\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf"} {
		for _, lo := range []string{"\xed\xb0\x80", "\xed\xbf\xbf"} {
			pairs = append(pairs, hi+lo)
		}
	}
	add("6.21", false, "UTF-16 surrogate pair encoded as two code points", pairs...)
	// 6.22: noncharacters U+xFFFE and U+xFFFF of every plane are valid UTF-8.
	var nonchars []string
	for plane := rune(0); plane <= 0x10; plane++ {
		for _, low := range []rune{0xfffe, 0xffff} {
			nonchars = append(nonchars, string(utf8.AppendRune(nil, plane<<16|low)))
		}
	}
	add("6.22", true, "noncharacter", nonchars...)
	// 6.23: the Specials block, U+FFF9 to U+FFFF (U+FFFD is the replacement character).
	var specials []string
	for r := rune(0xfff9); r <= 0xffff; r++ {
		specials = append(specials, string(utf8.AppendRune(nil, r)))
	}
	add("6.23", true, "code point of the Specials block", specials...)
	return seqs
}
