// Package transport owns Herald's sockets: the listening socket, the epoll loops, the
// HTTP upgrade, WebSocket framing (RFC 6455, server side, text only), the bounded
// per-connection output queues and the close handshake. It knows nothing of Pusher,
// channels or Redis: it hands complete text messages to a Handler and writes the
// frames it is given.
//
// # Entry points
//
//   - New(Config) binds the address and prepares the loops; Run starts them;
//     Shutdown(ctx, reason) drains and stops everything; StopAccepting closes only
//     the listener.
//   - Handler (implemented by the hub) gets Accept, OnOpen, OnMessage, OnIdle and
//     OnClose for each connection.
//   - AppendTextFrame builds a frame once; Server.Fanout hands the same bytes to many
//     connections; Conn.WriteText/WriteFrame write to one; Server.Do runs a function
//     on a connection's owner loop.
//   - Stats returns the counters.
//
// # Why raw epoll
//
// The budget is about 250 bytes of transport memory per idle socket and no goroutine
// per socket, for hundreds of thousands of sockets. net.Conn cannot meet it: a
// *net.TCPConn with its netFD and pollDesc costs hundreds of bytes, and reading from
// it needs a goroutine parked per connection, each with a stack of 2-8 KiB. So the
// package owns fds with golang.org/x/sys/unix (socket, bind, listen, accept4 with
// SOCK_NONBLOCK|SOCK_CLOEXEC, epoll, eventfd, read, write, writev). It does not use an
// event-loop library (gnet, nbio, evio): what Herald needs of one is a few hundred lines
// (an epoll_wait loop, a slab, a mailbox), while those libraries bring their own
// buffering (a buffer per connection, which is what we must not have), their own
// connection and codec types, and their own goroutine and shutdown model, all of
// which would have to be worked around to meet the invariants below. x/sys/unix is
// maintained with the Go project and is already a dependency.
//
// # Concurrency contract
//
//   - Each loop is one goroutine with one epoll set, one eventfd and one 64 KiB read
//     buffer. The listener is in every loop's epoll set with EPOLLEXCLUSIVE; the loop
//     that wakes accepts (at most 64 per wake-up) and deals the sockets out
//     round-robin (through the mailbox), so that loops own equal shares. A connection
//     belongs to its owner loop for its whole life. All Handler methods for a
//     connection run on its owner loop, one at a time.
//   - Conn.ID, Conn.Loop and Conn.RemoteAddr are safe anywhere. Conn.Value,
//     SetValue, WriteText, WriteFrame, Close and Closed are owner loop only: call them
//     from a Handler callback or from a function passed to Server.Do.
//   - Server.Fanout, Server.Do, Server.Stats, Server.StopAccepting and Server.Addr
//     are safe from any goroutine and never wait for a loop: Fanout and Do put one
//     job in a loop's mailbox (a mutex-guarded slice swapped out whole by the loop,
//     woken through its eventfd), in order. Fanout jobs past Config.MailboxSize are
//     dropped and counted; Do jobs are always admitted, because they carry state
//     changes that must not be lost and their callers bound them. Shutdown must not
//     be called from a Handler.
//   - Locks: each loop's mailbox mutex, and Server.lnMu (shared by a loop while it
//     accepts, exclusive while StopAccepting closes the listener). No two locks are
//     ever held together, so there is no lock order.
//   - OnClose never runs inside another callback or Conn method: a connection that
//     fails in the middle of one (a write error, a slow consumer) is marked dead and
//     reported when the loop finishes the current batch of events.
//   - Goroutines: Run starts one per loop and one for the HTTP server's Serve;
//     Shutdown stops and waits for all of them (and net/http's own connection
//     goroutines are closed by http.Server.Shutdown or Close).
//
// # Invariants
//
//   - An idle connection has no goroutine and no buffer: it is a Conn (about 100
//     bytes, pinned under 200 by a test), a 16-byte slab slot and one 16-byte timer
//     wheel entry, plus its kernel state and epoll registration. A partial request
//     head, a partial frame, a message being reassembled, output the kernel did not
//     take and a close in progress live in a side struct that exists only while
//     needed.
//   - At most one writer per connection: only the owner loop writes. With nothing
//     queued a frame is written with one write syscall; a remainder is queued as
//     references to the shared frames (no copy), EPOLLOUT is armed, and the queue goes
//     out in one writev per EPOLLOUT. Past MaxPendingBytes the connection is a slow
//     consumer: its queue is dropped and its socket closed.
//   - Every queue is bounded: mailboxes (MailboxSize, drops counted), output
//     (MaxPendingBytes), input (MaxHeaderBytes for a head, MaxMessageBytes for a
//     message, checked from frame headers before any payload is buffered), the HTTP
//     handoff channel.
//   - OnClose runs exactly once for every connection that got OnOpen, with the first
//     close reason; every such close is counted under its label in Stats.Closed.
//     Conn.Close queues the close frame behind pending output, shuts the write side
//     once it is flushed, and closes the socket on the peer's close frame or EOF, or
//     CloseTimeout after Close was called (flush and wait share that one deadline).
//   - Timers are a per-loop wheel (100 ms ticks) with lazy re-arming; there is no
//     time.Timer and no goroutine per connection.
//   - Bad input gets an HTTP status (400, 404/403 from Accept, 408, 426, 431) or a
//     close code (1002, 1003, 1007, 1009) and affects only its own connection. The
//     package recovers from nothing: the parsers are fuzzed instead, and Handler
//     panics are the Handler's.
//   - Plain HTTP requests on the same port leave the loops: the fd becomes a net.Conn
//     served by an http.Server the package owns, the bytes already read replayed
//     first.
package transport
