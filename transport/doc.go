// Package transport owns Herald's sockets: the listening socket, the epoll loops, the
// HTTP upgrade, WebSocket framing (RFC 6455, server side, text only), the bounded
// per-connection output queues and the close handshake. It knows nothing of Pusher,
// channels or Redis: it hands complete text messages to a Handler and writes the
// frames it is given.
//
// # Entry points
//
//   - New(Config) binds the address and prepares the loops; Run starts them;
//     Drain(ctx, reason, window) stops accepting and closes the open WebSockets
//     spread evenly over window; Shutdown(ctx, reason) closes everything left and
//     stops; StopAccepting closes only the listener.
//   - Config.ProxyProtocol and TrustedProxies read the PROXY protocol header a load
//     balancer puts in front of each connection; Config.MaxConnectionsPerIP and
//     MaxUpgradesPerIPPerSecond limit each client address (answered 429).
//   - Handler (implemented by the hub) gets Accept, OnOpen, OnMessage, OnIdle and
//     OnClose for each connection.
//   - AppendTextFrame builds a frame once; Server.Fanout hands the same bytes to many
//     connections (FanoutWait waits for room in a full loop, Congested says a loop is
//     past its high-water mark); Conn.WriteText/WriteFrame write to one; Server.Do
//     runs a function on a connection's owner loop, Server.Each on every open
//     connection's (a rare sweep: it visits them all).
//   - Stats returns the counters; every connection refused before it became a
//     WebSocket is counted under a label in Stats.Refused (the Refused* constants).
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
//   - Conn.ID and Conn.Loop are safe anywhere. Conn.RemoteAddr, Value, SetValue,
//     WriteText, WriteFrame, Close and Closed are owner loop only: call them from a
//     Handler callback or from a function passed to Server.Do. (RemoteAddr reads the
//     loop's address table, or the kernel through an fd only the loop may close; a
//     caller elsewhere copies the address it got in Accept or OnOpen.)
//   - Server.Fanout, Server.Do, Server.Each, Server.Congested, Server.Stats,
//     Server.StopAccepting and Server.Addr are safe from any goroutine and never wait
//     for a loop (FanoutWait, Drain and Shutdown do wait, so they must not be called
//     from a Handler): Fanout and Do put one job in a loop's mailbox (Each one in each
//     loop's) (a mutex-guarded slice swapped out whole by the loop, woken through its
//     eventfd), in order. Each kind of job has its bound and its behaviour at it (the
//     queue table below): a Fanout share past the fan-out backlog bound is refused
//     and its connections reported to the caller; a Do past DoMailboxSize closes its
//     connection with Config.Overloaded instead of losing a state change silently.
//     Shutdown must not be called from a Handler.
//   - Locks, and their order: Server.lnMu before a loop's mailbox mutex. A loop
//     holds lnMu shared while it accepts (StopAccepting holds it exclusively while
//     it closes the listener), and under it posts the sockets it deals to other
//     loops, which takes their mailbox mutexes. The per-IP table's shard mutexes are
//     leaves: a loop takes one for a map lookup and store (and, when that shard has
//     doubled since its last sweep, one sweep of it) while holding no other lock,
//     and takes nothing under it. Server.mu (Run, Drain and Shutdown
//     bookkeeping) is never held with any of these. No other two locks are ever
//     held together.
//   - OnClose never runs inside another callback or Conn method: a connection that
//     fails in the middle of one (a write error, a slow consumer) is marked dead and
//     reported when the loop finishes the current batch of events.
//   - Goroutines: Run starts one per loop and one for the HTTP server's Serve;
//     Shutdown stops and waits for all of them (and net/http's own connection
//     goroutines are closed by http.Server.Shutdown or Close).
//
// # Invariants
//
//   - An idle connection has no goroutine and no buffer: it is a Conn (64 bytes,
//     pinned by TestConnSize), a 16-byte slab slot and one 12-byte timer wheel entry,
//     plus its kernel state and epoll registration. A partial request head (PROXY
//     header included), a partial frame, a message being reassembled, output the
//     kernel did not take and a close in progress live in a side struct that exists
//     only while needed. When the PROXY protocol or a per-IP limit is configured,
//     each slab slot also has a 20-byte, pointer-free address (loop.peers: the
//     client's address must outlive the handshake, for RemoteAddr and for the
//     per-IP release at close), and each client address with an open connection
//     has an entry in the per-IP table; TestIdleMemory measures both set-ups.
//   - At most one writer per connection: only the owner loop writes. The Fanout jobs
//     of one mailbox batch are gathered (gather.go, nats-server's flushClients idea):
//     each connection gets the batch's frames for it in one writev at the end of the
//     batch, or one write when it got one frame (as cheap as before: no allocation),
//     in the order they were fanned out, before anything else written to it. With
//     nothing queued a frame is written with one write syscall; what the kernel does
//     not take is queued as references to the shared frames (no copy), EPOLLOUT is
//     armed, and the queue goes out in one writev per EPOLLOUT. Past MaxPendingBytes
//     (bytes handed to the connection that the kernel has not taken, gathered or
//     not) the connection is a slow consumer: its queue is dropped, its close frame
//     (Config.SlowConsumer) is offered to the kernel once without waiting (behind the
//     rest of a frame the peer is in the middle of), and the socket is closed at once
//     if the kernel did not take it all, else after the close handshake.
//   - Every queue is bounded; the table below gives each one's bound, what happens
//     when it is full, and the counter that shows it.
//   - OnClose runs exactly once for every connection that got OnOpen, with the first
//     close reason; every such close is counted under its label in Stats.Closed.
//     Conn.Close queues the close frame behind pending output, shuts the write side
//     once it is flushed, and closes the socket on the peer's close frame or EOF, or
//     CloseTimeout after Close was called (flush and wait share that one deadline).
//   - Timers are a per-loop wheel (100 ms ticks) with lazy re-arming; there is no
//     time.Timer and no goroutine per connection.
//   - Bad input gets an HTTP status (400, 404/403 from Accept, 408, 426, 429 past a
//     per-IP limit, 431, 503 while draining) or a close code (1002, 1003, 1007,
//     1009) and affects only its own connection; a refused PROXY header gets the
//     connection closed without a byte, as the PROXY spec asks. Each refusal is
//     counted under its label (Stats.Refused; HandshakeFailed is their sum). The
//     package recovers from nothing: the parsers are fuzzed instead, and Handler
//     panics are the Handler's.
//   - A per-IP connection is taken when an upgrade is admitted and given back
//     exactly once: when the handshake fails, or when the socket is closed (finish),
//     whichever comes first (the peerHeld bit is cleared on release;
//     TestIPConnLimitReleasedOnce).
//   - Plain HTTP requests on the same port leave the loops: the fd becomes a net.Conn
//     served by an http.Server the package owns, the bytes already read replayed
//     first (the PROXY header excluded); its RemoteAddr is the client's from the
//     PROXY header when there was one.
//
// # Queues
//
//	queue                     bound                                  when full                                   shows it
//	mailbox: Fanout jobs      per loop, queued or being written:     the loop's share is refused; Fanout         Stats.MailboxDropped (jobs),
//	                          MailboxSize jobs (8192) and            returns its connections (the caller counts  DeliveriesDropped (conns),
//	                          MailboxDeliveries deliveries           them as not delivered); FanoutWait waits    FanoutBacklog (now);
//	                          (1,048,576); Congested from half       for room first, up to its wait              herald_fanout_dropped_total
//	mailbox: Do jobs          DoMailboxSize per loop (65,536)        fn dropped; its connection closed with      Stats.DoRefused, DoOverflowClosed,
//	                                                                 Overloaded before the loop's next batch     Closed[Overloaded.Label]
//	mailbox: control jobs     Each: one per loop per call (rare);    always admitted                             -
//	                          a socket to adopt: one per accepted
//	                          socket (the process's file limit);
//	                          drain, quit: one per Shutdown
//	gathered frames           gatherMax (65,536) (conn, frame)       the batch's frames are written at once,     Stats.Writes against FramesOut
//	                          pairs per loop                         and the batch goes on
//	output per connection     MaxPendingBytes (1 MiB) not taken      slow consumer: queue dropped, close frame   Closed[SlowConsumer.Label],
//	                          by the kernel (references, no copy)    offered once, socket closed                 SlowCloseSent, SlowCloseUnsent
//	handshake input           536 bytes of PROXY header,             proxy_invalid (closed), 431                 Refused[proxy_invalid],
//	                          MaxHeaderBytes (16 KiB) of head                                                    Refused[head_too_large]
//	message input             MaxMessageBytes (64 KiB), checked      close 1009                                  Closed[message_too_big]
//	                          from the frame header
//	HTTP handoff              1024 connections (httpBacklog)         the connection is closed                    Stats.HTTPRefused
//	per-IP table              entries for addresses with an open     - (swept: see ipLimiter)                    -
//	                          connection or a bucket refilling
//	timer wheel               one live entry per connection, stale   -                                           -
//	                          ones dropped as they come round
//
// Do's bound is not the fan-out backlog's because Do carries state changes (a
// subscription confirmed, a connection closed) that must not be lost: a Fanout share
// refused is a message some subscribers miss, counted, while a Do refused would leave
// a client and the server disagreeing about its state. So a Do past its bound costs
// the connection instead (the client reconnects and starts from a state the server
// knows), and Handlers that clean up in OnClose lose nothing.
//
// # PROXY protocol
//
// With Config.ProxyProtocol, the first bytes of a connection go through a PROXY stage
// before the HTTP head is looked for, inside the loop, on the bytes already read into
// the head buffer: no goroutine, no extra read, and a header split across reads
// waits in the same partial-head buffer (bounded at 536 bytes for the header: v1 is
// at most 107, v2 16 plus what its length field says, refused past 536) under the
// same HandshakeTimeout. The stage keeps no state in Conn beyond one flag bit; the
// address it finds goes into loop.peers.
//
//   - From a trusted source (in TrustedProxies, or any source when the list is
//     empty) a header is required: none closes the connection (proxy_missing), a
//     malformed one too (proxy_invalid). v1: TCP4, TCP6 and UNKNOWN. v2: the PROXY
//     and LOCAL commands; TCP over IPv4 and IPv6; TLVs skipped. A LOCAL command, an
//     UNSPEC family or a v1 UNKNOWN line keeps the balancer's own address (health
//     checks). The UDP and UNIX families are refused (proxy_invalid): a TCP stream
//     cannot carry UDP, and a UNIX client has no address, so falling back to the
//     balancer's would put all such clients under one per-IP limit without a word.
//   - From any other source a header is refused (proxy_untrusted), so that a
//     client cannot choose its own address. Whatever a client sends through a
//     trusted balancer (its own "PROXY ..." line included) comes after the
//     balancer's header and is parsed as HTTP: a second header is a 400.
//   - With ProxyProtocol off nothing changes: a header is a malformed request.
//
// The parsers are the package's own (proxy.go), not github.com/pires/go-proxyproto:
// that library reads the header itself from a net.Conn (or a bufio.Reader over one),
// blocking until it is complete, which needs the goroutine and the buffer per
// connection this package exists to avoid; and it cannot say "not enough bytes yet"
// for a header split across reads, which the loop needs in order to wait for the
// next EPOLLIN. Ours parse a byte slice, report "more needed" for any prefix of a
// valid header, never allocate (TestParseProxyNoAlloc), and are fuzzed alone and
// through the loop's head path (FuzzProxyV1, FuzzProxyV2, FuzzProxyHead).
//
// # Per-IP limits and Drain
//
// The per-IP limits key on the client's real address (IPv6 /128, IPv4 unmapped),
// are checked when a complete upgrade request has arrived and before the handshake
// runs (so a refused client costs no Accept call), and share one table across the
// loops, sharded 64 ways by a seeded hash. Drain's schedule is per loop: each closes
// ceil(n × elapsed/window) − closed-so-far of the n WebSockets it had at the start,
// at every wake-up (at least every 100 ms tick while a drain runs), so closes per
// second are flat; upgrades are refused (503) from then on, plain HTTP is served.
package transport
