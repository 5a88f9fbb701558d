package transport

import (
	"net"
	"net/http"
	"sync"
)

// httpListener is the net.Listener of the HTTP server: the loops push the plain
// HTTP connections they hand off, the server's Serve goroutine takes them.
type httpListener struct {
	ch   chan net.Conn // bounded; a full channel refuses the connection
	done chan struct{}
	once sync.Once
	addr net.Addr
}

const httpBacklog = 1024

func newHTTPListener(addr string) *httpListener {
	ta, _ := net.ResolveTCPAddr("tcp", addr)
	return &httpListener{ch: make(chan net.Conn, httpBacklog), done: make(chan struct{}), addr: ta}
}

// push never blocks: the loop that calls it must not wait on the HTTP server. A
// connection it cannot hand over (the backlog is full, or the server stopped) is
// closed, and push reports false.
func (l *httpListener) push(c net.Conn) bool {
	select {
	case <-l.done:
		_ = c.Close()
		return false
	default:
	}
	select {
	case l.ch <- c:
		return true
	default:
		_ = c.Close()
		return false
	}
}

func (l *httpListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *httpListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// drain closes the connections pushed but never accepted.
func (l *httpListener) drain() {
	for {
		select {
		case c := <-l.ch:
			_ = c.Close()
		default:
			return
		}
	}
}

func (l *httpListener) Addr() net.Addr { return l.addr }

// prefixConn replays the bytes the loop read (the request head and whatever came
// with it) before reading from the socket. remote, when set, is the client's address
// from a PROXY header: net/http takes Request.RemoteAddr from RemoteAddr.
type prefixConn struct {
	net.Conn
	pre    []byte
	remote net.Addr
}

func (c *prefixConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close as it does for a *net.TCPConn.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func notFound(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
