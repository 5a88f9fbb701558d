package transport

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gobwas/ws"
)

var (
	errMalformedHead = errors.New("transport: malformed request head")
	headEnd          = []byte("\r\n\r\n")
)

// parseHead checks a complete request head (request line, header lines and the blank
// line, ending in CRLF CRLF) and reports whether it asks for a WebSocket upgrade, that
// is, whether it has an Upgrade header holding the token "websocket". It only checks
// the grammar needed to route the request safely; gobwas/ws (for upgrades) and
// net/http (for the rest) check the details.
func parseHead(head []byte) (upgrade bool, err error) {
	if !bytes.HasSuffix(head, headEnd) {
		return false, errMalformedHead
	}
	rest := head[:len(head)-2] // every line, each ending in CRLF
	line, rest, _ := bytes.Cut(rest, []byte("\r\n"))
	if !validRequestLine(line) {
		return false, errMalformedHead
	}
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || !isToken(name) || !validFieldValue(value) {
			return false, errMalformedHead
		}
		if bytes.EqualFold(name, []byte("Upgrade")) && hasToken(value, "websocket") {
			upgrade = true
		}
	}
	return upgrade, nil
}

// validRequestLine checks "METHOD SP target SP HTTP/d.d".
func validRequestLine(line []byte) bool {
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 || !isToken(method) {
		return false
	}
	target, proto, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(target) == 0 {
		return false
	}
	for _, b := range target {
		if b <= ' ' || b == 0x7f {
			return false
		}
	}
	return len(proto) == 8 && bytes.HasPrefix(proto, []byte("HTTP/")) &&
		isDigit(proto[5]) && proto[6] == '.' && isDigit(proto[7])
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// isToken reports whether b is an RFC 9110 token.
func isToken(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', isDigit(c):
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldValue refuses control characters other than HTAB (a bare CR or LF
// inside a line included).
func validFieldValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds tok (case-insensitive).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte(","))
		if bytes.EqualFold(bytes.Trim(item, " \t"), []byte(tok)) {
			return true
		}
	}
	return false
}

// upgrader runs gobwas/ws's Upgrader over a request head already in memory. One per
// loop: the hooks write into its fields, which are valid for one upgrade call.
type upgrader struct {
	ws      ws.Upgrader
	handler Handler

	// per call
	head     []byte
	resp     []byte
	path     string
	rawQuery string
	origin   string
	remote   string
	value    any
	acceptEr error
}

func newUpgrader(h Handler) *upgrader {
	u := &upgrader{handler: h}
	u.ws = ws.Upgrader{
		OnRequest: func(uri []byte) error {
			u.path, u.rawQuery = splitTarget(uri)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if bytes.EqualFold(key, []byte("Origin")) {
				u.origin = string(value)
			}
			return nil
		},
		// Called once the request is a valid handshake, right before the 101 is
		// written: the hub decides last, so it never sees a broken request.
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			u.value, u.acceptEr = u.handler.Accept(&UpgradeRequest{
				Path: u.path, RawQuery: u.rawQuery, Origin: u.origin, RemoteAddr: u.remote,
			})
			return nil, u.acceptEr
		},
	}
	return u
}

// Read and Write make the upgrader the io.ReadWriter that ws.Upgrader.Upgrade
// reads the head from and writes its response to.
func (u *upgrader) Read(p []byte) (int, error) {
	if len(u.head) == 0 {
		return 0, errEOFHead
	}
	n := copy(p, u.head)
	u.head = u.head[n:]
	return n, nil
}

func (u *upgrader) Write(p []byte) (int, error) {
	u.resp = append(u.resp, p...)
	return len(p), nil
}

var errEOFHead = errors.New("transport: end of request head")

// upgrade runs the handshake for head (a complete head, as parseHead accepted it).
// On success ok is true, resp holds the 101 response (valid until the next call) and
// value is what Handler.Accept returned. Otherwise status and msg say how to answer.
func (u *upgrader) upgrade(head []byte, remote string) (resp []byte, value any, status int, msg string, ok bool) {
	u.head, u.resp = head, u.resp[:0]
	u.path, u.rawQuery, u.origin, u.remote, u.value, u.acceptEr = "", "", "", remote, nil, nil
	_, err := u.ws.Upgrade(u)
	value, u.value, u.head = u.value, nil, nil
	if err == nil {
		return u.resp, value, http.StatusSwitchingProtocols, "", true
	}
	status, msg = http.StatusBadRequest, "bad request"
	var rej *RejectError
	var wsRej *ws.ConnectionRejectedError
	switch {
	case u.acceptEr != nil && errors.As(u.acceptEr, &rej):
		status, msg = rej.Status, rej.Message
	case u.acceptEr != nil:
		// any other error from Accept answers 400 without leaking its text
	case errors.As(err, &wsRej) && wsRej.StatusCode() != 0:
		status, msg = wsRej.StatusCode(), wsRej.Error()
	}
	if status < 400 || status > 599 {
		status = http.StatusBadRequest
	}
	return nil, nil, status, msg, false
}

// splitTarget splits a request target into a decoded path and a raw query.
func splitTarget(uri []byte) (path, rawQuery string) {
	if len(uri) > 0 && uri[0] != '/' { // absolute-form, "*" or junk
		if pu, err := url.ParseRequestURI(string(uri)); err == nil {
			return pu.Path, pu.RawQuery
		}
		return string(uri), ""
	}
	p, q, _ := bytes.Cut(uri, []byte("?"))
	path = string(p)
	if bytes.IndexByte(p, '%') >= 0 {
		if dp, err := url.PathUnescape(path); err == nil {
			path = dp
		}
	}
	return path, string(q)
}

// appendHTTPError appends a complete HTTP error response that closes the connection.
func appendHTTPError(dst []byte, status int, msg string) []byte {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, text...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)+1), 10)
	switch status {
	case http.StatusUpgradeRequired:
		dst = append(dst, "\r\nSec-WebSocket-Version: 13"...)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		dst = append(dst, "\r\nRetry-After: 1"...)
	}
	dst = append(dst, "\r\nConnection: close\r\n\r\n"...)
	dst = append(dst, msg...)
	return append(dst, '\n')
}
