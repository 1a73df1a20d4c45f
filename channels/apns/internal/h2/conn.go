package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	initialWindow = 65535     // RFC 9113 §6.9.2
	maxWindow     = 1<<31 - 1 // RFC 9113 §6.9.1
	maxStreamID   = 1<<31 - 1
	// defaultMaxStreams applies until the server says otherwise (RFC 9113
	// says unlimited; x/net assumes 1000 as well).
	defaultMaxStreams = 1000
	// encoderTableLimit caps our HPACK encoder's dynamic table whatever the
	// server allows: the constant APNs headers (a ~200-byte JWT, topic,
	// authority, push type, priority, content type) take well under 1 KiB.
	encoderTableLimit = 4096
	// maxSpareWriteBuf is the largest write buffer kept for reuse.
	maxSpareWriteBuf = 1 << 20
	readBufSize      = 32 << 10
)

var (
	errClosed     = errors.New("connection closed")
	errIDsUsedUp  = errors.New("connection ran out of stream ids")
	errGoneAway   = errors.New("connection finished after GOAWAY")
	aLongTimeAgo  = time.Unix(1, 0)
	errNoSettings = errors.New("server did not start with SETTINGS")
)

// connError is a connection-level protocol error we detected: we send
// GOAWAY with code, then close.
type connError struct {
	code http2.ErrCode
	err  error
}

func (e connError) Error() string { return fmt.Sprintf("%v: %v", e.code, e.err) }
func (e connError) Unwrap() error { return e.err }

func protocolError(format string, args ...any) error {
	return connError{http2.ErrCodeProtocol, fmt.Errorf(format, args...)}
}

// Conn is one HTTP/2 client connection. Its methods are safe for concurrent
// use.
type Conn struct {
	cfg   Config
	nc    net.Conn
	br    *bufio.Reader
	fr    *http2.Framer // read side; the reader goroutine's alone once Dial returns
	start time.Time     // monotonic base for lastRead
	pool  sync.Pool     // *Call

	lastRead   atomic.Int64 // since start, ns
	usable     atomic.Bool
	readerDone chan struct{}
	writerDone chan struct{}

	// mu guards everything below. One lock: stream ids must go out in
	// increasing order, so assigning one, HPACK-encoding with the shared
	// encoder and appending the frames are one critical section anyway,
	// and the reader's per-frame work is short.
	mu sync.Mutex

	// Write side: frames are appended to wbuf (group commit); the writer
	// goroutine swaps it out and writes it while more accumulate.
	wbuf       pendingFrames
	fw         *http2.Framer // writes into wbuf
	wspare     []byte
	wcond      sync.Cond
	writerIdle bool
	wstop      bool
	henc       *hpack.Encoder
	hbuf       pendingFrames // the header block being encoded
	tableGen   uint64        // bumped whenever the encoder's dynamic table changes
	pseudoEnc  encodedFields
	constEnc   encodedFields
	nextID     uint32

	streams          map[uint32]*Call
	active           uint32 // streams holding one of the server's MAX_CONCURRENT_STREAMS
	slotQ, windowQ   waitList
	maxStreams       uint32
	peerStreamWindow int64 // server's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame     uint32
	peerMaxHeaders   uint64
	sendWindow       int64 // connection-level, what we may still send
	recvAvail        int64 // connection-level, what the server may still send
	recvUnacked      int64 // consumed but not yet returned by WINDOW_UPDATE

	// Set while the reader handles frames: finished calls are signalled
	// in a batch after it unlocks.
	deferDone bool
	doneBatch []*Call

	// The header block being read (HEADERS then CONTINUATIONs).
	dec       *hpack.Decoder
	hdr       *Call // nil when the block's stream is gone: decode, drop
	hdrID     uint32
	hdrEnd    bool // the block ends the stream
	hdrBytes  uint32
	hdrStatus int
	hdrBad    error

	goAway        bool
	goAwayErr     error
	closing       bool
	drained       chan struct{} // closed once no stream is left after GOAWAY or Close
	drainedClosed bool
	err           error // first cause of death
	failed        bool

	timer    *time.Timer
	pingOut  bool
	pingSent int64
	pingData [8]byte
	pingSeq  uint64
}

// pendingFrames is an in-memory io.Writer: the Framer appends frames to
// the write buffer, the HPACK encoder header fields to the block.
type pendingFrames struct{ B []byte }

func (p *pendingFrames) Write(b []byte) (int, error) {
	p.B = append(p.B, b...)
	return len(b), nil
}

// Dial connects with cfg.Dial, sends the client preface and our SETTINGS,
// and returns once the server's SETTINGS arrived (and were applied), so the
// first request already honours the server's limits.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	if cfg.Dial == nil {
		return nil, errors.New("dial http/2 connection: Config.Dial is nil")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := cfg.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial http/2 connection: %w", err)
	}
	if cs, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if p := cs.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
			_ = nc.Close()
			return nil, fmt.Errorf("dial http/2 connection: server negotiated %q, want h2", p)
		}
	}
	c := newConn(nc, cfg)
	if err := c.handshake(ctx); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("start http/2 connection: %w", err)
	}
	c.usable.Store(true)
	c.lastRead.Store(c.sinceStart())
	go c.writeLoop()
	go c.readLoop()
	if cfg.ReadIdleTimeout > 0 {
		c.mu.Lock()
		c.timer = time.AfterFunc(cfg.ReadIdleTimeout, c.healthCheck)
		c.mu.Unlock()
	}
	return c, nil
}

func newConn(nc net.Conn, cfg Config) *Conn {
	c := &Conn{
		cfg:              cfg,
		nc:               nc,
		start:            time.Now(),
		readerDone:       make(chan struct{}),
		writerDone:       make(chan struct{}),
		nextID:           1,
		streams:          make(map[uint32]*Call),
		maxStreams:       defaultMaxStreams,
		peerStreamWindow: initialWindow,
		peerMaxFrame:     16 << 10,
		peerMaxHeaders:   1<<64 - 1,
		sendWindow:       initialWindow,
		recvAvail:        int64(cfg.ConnWindow),
		drained:          make(chan struct{}),
	}
	c.wcond.L = &c.mu
	c.fw = http2.NewFramer(&c.wbuf, nil)
	c.br = bufio.NewReaderSize(readClock{nc, c}, readBufSize)
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetReuseFrames()
	// We never advertise a larger SETTINGS_MAX_FRAME_SIZE than the default.
	c.fr.SetMaxReadFrameSize(16 << 10)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.henc.SetMaxDynamicTableSizeLimit(encoderTableLimit)
	c.dec = hpack.NewDecoder(4096, c.onField)
	c.dec.SetMaxStringLength(int(cfg.MaxResponseHeaderBytes))
	c.pool.New = func() any {
		return &Call{conn: c, done: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	}
	return c
}

func (c *Conn) sinceStart() int64 { return int64(time.Since(c.start)) }

func (c *Conn) handshake(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	err := c.handshakeFrames()
	if !stop() {
		return context.Cause(ctx)
	}
	if err != nil {
		return err
	}
	return c.nc.SetDeadline(time.Time{})
}

func (c *Conn) handshakeFrames() error {
	c.mu.Lock()
	c.wbuf.B = append(c.wbuf.B, http2.ClientPreface...)
	_ = c.fw.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: c.cfg.StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.MaxResponseHeaderBytes},
	)
	if c.cfg.ConnWindow > initialWindow {
		_ = c.fw.WriteWindowUpdate(0, c.cfg.ConnWindow-initialWindow)
	}
	out := c.wbuf.B
	c.wbuf.B = nil
	c.mu.Unlock()
	if _, err := c.nc.Write(out); err != nil {
		return fmt.Errorf("write preface: %w", err)
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return fmt.Errorf("read server settings: %w", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return errNoSettings
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The ACK waits in wbuf for the writer goroutine.
	return c.applySettingsLocked(sf)
}

// Usable reports whether the connection takes new requests (not closed,
// not going away, stream ids left).
func (c *Conn) Usable() bool { return c.usable.Load() }

// finished reports whether the connection is closed and its reader gone.
func (c *Conn) finished() bool {
	select {
	case <-c.readerDone:
		return true
	default:
		return false
	}
}

// RoundTrip sends req on a new stream and waits for the whole answer:
// Start then Wait.
func (c *Conn) RoundTrip(ctx context.Context, req *Request, resp *Response) error {
	call, err := c.Start(ctx, req)
	if err != nil {
		return err
	}
	return call.Wait(ctx, resp)
}

// Start opens a stream for req and queues its frames: HEADERS, and DATA as
// far as the send windows allow. It waits, ctx-aware, for a stream slot
// when the server's MAX_CONCURRENT_STREAMS are taken, and for
// WINDOW_UPDATEs when the body does not fit the windows; it does not wait
// for the answer (Wait does), so one goroutine can have several requests in
// flight and be woken once for all of them. req must stay unchanged until
// Wait returns. Errors matching ErrUnprocessed mean nothing was sent.
func (c *Conn) Start(ctx context.Context, req *Request) (*Call, error) {
	hsize, err := checkRequest(req)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := c.getStream()
	c.mu.Lock()
	if err := c.acquireSlotLocked(ctx, st); err != nil {
		c.mu.Unlock()
		c.putStream(st)
		return nil, err
	}
	if hsize > c.peerMaxHeaders {
		err = fmt.Errorf("send request: %w", ErrHeaderListTooLarge)
	} else {
		err = c.checkConstantsLocked(req)
	}
	if err != nil {
		c.releaseSlotLocked()
		c.mu.Unlock()
		c.putStream(st)
		return nil, err
	}
	st.group = req.Group
	body := req.Body
	c.writeHeadersLocked(st, req, len(body) == 0)
	for len(body) > 0 && !st.finished {
		if body = c.writeDataLocked(st, body); len(body) == 0 {
			break
		}
		// Out of send window: let what we have go, wait for WINDOW_UPDATE.
		c.kickWriterLocked()
		ctxErr := c.parkLocked(ctx, st, &c.windowQ)
		if ctxErr != nil && !st.finished {
			c.abandonLocked(st)
			c.mu.Unlock()
			c.putStream(st)
			return nil, ctxErr
		}
	}
	if st.finished && !st.closed {
		// Answered (or failed) before we sent the whole body: close our
		// side too.
		c.resetLocked(st, http2.ErrCodeCancel)
	}
	c.kickWriterLocked()
	c.mu.Unlock()
	return st, nil
}

// Wait waits for the answer to a started request and fills resp. When ctx
// ends first, the stream is reset (RST_STREAM CANCEL) and ctx's error
// returned. The Call must not be used after Wait.
func (st *Call) Wait(ctx context.Context, resp *Response) error {
	c := st.conn
	if done := ctx.Done(); done == nil {
		// A plain receive parks and wakes for less than a select.
		<-st.done
	} else {
		select {
		case <-st.done:
		case <-done:
			c.mu.Lock()
			if !st.finished {
				c.abandonLocked(st)
				c.mu.Unlock()
				c.putStream(st)
				return ctx.Err()
			}
			c.mu.Unlock()
			<-st.done // finished by the reader: its signal is there
		}
	}
	// The reader counted this call in its group when it finished it.
	if g := st.group; g != nil {
		g.ready.Add(-1)
	}
	err := st.err
	if err == nil {
		resp.Status = st.status
		resp.ID, resp.UniqueID, resp.RetryAfter = st.apnsID, st.uniqueID, st.retryAfter
		resp.Body = append(resp.Body[:0], st.body...)
	}
	c.putStream(st)
	return err
}

// Finished reports whether the answer is in, so Wait will not block (for
// more than the instant until the reader's signal lands).
func (st *Call) Finished() bool { return st.answered.Load() }

// checkRequest validates what the server would reject as malformed, and
// returns the header list size (RFC 9113 §6.5.2) to compare with the
// server's limit.
func checkRequest(req *Request) (uint64, error) {
	if req.Path == "" || req.Path[0] != '/' {
		return 0, errors.New("send request: path must start with /")
	}
	method := req.Method
	if method == "" {
		method = "POST"
	}
	size := uint64(len(":method")+len(method)+len(":scheme")+len("https")+len(":path")+len(req.Path)+len(req.PathSuffix)+len(":authority")) + 4*32
	for _, f := range req.Header {
		if !validName(f.Name) {
			return 0, errors.New("send request: invalid header field name")
		}
		// Constant fields are checked when first encoded (see
		// writeHeadersLocked); a ~200-byte JWT need not be rescanned per
		// request.
		if f.Unique && !httpguts.ValidHeaderFieldValue(f.Value) {
			return 0, invalidValue(f.Name)
		}
		size += uint64(len(f.Name)+len(f.Value)) + 32
	}
	if !httpguts.ValidHeaderFieldValue(req.Path) || !httpguts.ValidHeaderFieldValue(req.PathSuffix) {
		return 0, invalidValue(":path")
	}
	return size, nil
}

// invalidValue does not echo the value: it may be a secret.
func invalidValue(name string) error {
	return fmt.Errorf("send request: invalid value for header field %s", name)
}

// checkConstantsLocked validates the constant fields' values unless they
// are the very fields the encoding cache holds (validated when cached).
func (c *Conn) checkConstantsLocked(req *Request) error {
	if c.constEnc.valid && c.constEnc.matches(req.Header) {
		return nil
	}
	for _, f := range req.Header {
		if !f.Unique && !httpguts.ValidHeaderFieldValue(f.Value) {
			return invalidValue(f.Name)
		}
	}
	return nil
}

// validName accepts lower-case tokens other than the connection-specific
// fields HTTP/2 forbids (RFC 9113 §8.2.2).
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' {
			continue
		}
		if 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host":
		return false
	}
	return true
}

// acquireSlotLocked takes one of the server's concurrent-stream slots,
// waiting (ctx-aware, FIFO) when all are taken.
func (c *Conn) acquireSlotLocked(ctx context.Context, st *Call) error {
	if err := c.refuseLocked(); err != nil {
		return err
	}
	if c.active < c.maxStreams && c.slotQ.head == nil {
		c.active++
		return nil
	}
	ctxErr := c.parkLocked(ctx, st, &c.slotQ)
	granted, refused := st.granted, st.refused
	st.granted, st.refused = false, nil
	switch {
	case granted && ctxErr != nil:
		c.releaseSlotLocked()
		return ctxErr
	case granted:
		if err := c.refuseLocked(); err != nil {
			c.releaseSlotLocked()
			return err
		}
		return nil
	case refused != nil:
		return refused
	}
	return ctxErr
}

// refuseLocked says why no new stream may start, as an ErrUnprocessed.
func (c *Conn) refuseLocked() error {
	switch {
	case c.err != nil:
		return fmt.Errorf("send request: %w: %w", c.err, ErrUnprocessed)
	case c.goAway:
		return c.goAwayErr
	case c.closing:
		return fmt.Errorf("send request: %w: %w", errClosed, ErrUnprocessed)
	}
	return nil
}

func (c *Conn) accepting() bool { return c.err == nil && !c.goAway && !c.closing }

func (c *Conn) releaseSlotLocked() {
	c.active--
	c.grantSlotsLocked()
}

// grantSlotsLocked hands free slots to waiters in order (a direct handoff,
// so a newcomer cannot barge ahead of a woken waiter).
func (c *Conn) grantSlotsLocked() {
	for c.active < c.maxStreams && c.slotQ.head != nil && c.accepting() {
		st := c.slotQ.pop()
		st.granted = true
		c.active++
		signal(st.wake)
	}
}

// refuseWaitersLocked ends every slot wait with err.
func (c *Conn) refuseWaitersLocked(err error) {
	for st := c.slotQ.pop(); st != nil; st = c.slotQ.pop() {
		st.refused = err
		signal(st.wake)
	}
}

// writeHeadersLocked assigns the stream id and appends HEADERS (and
// CONTINUATIONs). The HPACK encoder is shared, so this must run under mu
// in stream-id order, which it does by construction.
func (c *Conn) writeHeadersLocked(st *Call, req *Request, endStream bool) {
	c.hbuf.B = c.hbuf.B[:0]
	method := req.Method
	if method == "" {
		method = "POST"
	}
	// Pseudo-header fields first (RFC 9113 §8.3), then the constant
	// fields, then the per-request ones. Errors cannot happen: the encoder
	// writes into memory.
	if c.pseudoEnc.valid && c.pseudoEnc.gen == c.tableGen && c.pseudoEnc.method == method {
		c.hbuf.B = append(c.hbuf.B, c.pseudoEnc.enc...)
	} else {
		start, gen := len(c.hbuf.B), c.tableGen
		c.writeField(":method", method, false)
		c.writeField(":scheme", "https", false)
		c.writeField(":authority", c.cfg.Authority, false)
		c.pseudoEnc.valid = c.tableGen == gen
		c.pseudoEnc.gen, c.pseudoEnc.method = gen, method
		c.pseudoEnc.enc = append(c.pseudoEnc.enc[:0], c.hbuf.B[start:]...)
	}
	c.hbuf.B = appendNeverIndexed(c.hbuf.B, pathIndex, "", req.Path, req.PathSuffix)
	if c.constEnc.valid && c.constEnc.gen == c.tableGen && c.constEnc.matches(req.Header) {
		c.hbuf.B = append(c.hbuf.B, c.constEnc.enc...)
	} else {
		start, gen := len(c.hbuf.B), c.tableGen
		c.constEnc.fields = c.constEnc.fields[:0]
		for _, f := range req.Header {
			if !f.Unique {
				c.writeField(f.Name, f.Value, false)
				c.constEnc.fields = append(c.constEnc.fields, f)
			}
		}
		c.constEnc.valid = c.tableGen == gen
		c.constEnc.gen = gen
		c.constEnc.enc = append(c.constEnc.enc[:0], c.hbuf.B[start:]...)
	}
	for _, f := range req.Header {
		if f.Unique {
			c.hbuf.B = appendNeverIndexed(c.hbuf.B, 0, f.Name, f.Value, "")
		}
	}
	st.id = c.nextID
	c.nextID += 2
	block := c.hbuf.B
	n := min(len(block), int(c.peerMaxFrame))
	_ = c.fw.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: block[:n], EndStream: endStream, EndHeaders: n == len(block)})
	for block = block[n:]; len(block) > 0; block = block[n:] {
		n = min(len(block), int(c.peerMaxFrame))
		_ = c.fw.WriteContinuation(st.id, n == len(block), block[:n])
	}
	st.sentEnd = endStream
	st.sendWindow = c.peerStreamWindow
	st.recvAvail = int64(c.cfg.StreamWindow)
	c.streams[st.id] = st
	if c.nextID > maxStreamID {
		c.beginCloseLocked()
	}
}

// writeField HPACK-encodes one field and notes whether the dynamic table
// changed: an insertion (literal with incremental indexing, 01xxxxxx) or a
// size update (001xxxxx) renumbers entries, so cached encodings go stale.
func (c *Conn) writeField(name, value string, sensitive bool) {
	start := len(c.hbuf.B)
	_ = c.henc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: sensitive})
	if b := c.hbuf.B[start]; b&0xc0 == 0x40 || b&0xe0 == 0x20 {
		c.tableGen++
	}
}

// pathIndex is :path's entry in HPACK's static table (RFC 7541 Appendix A).
const pathIndex = 4

// appendNeverIndexed appends a "literal header field never indexed"
// (RFC 7541 §6.2.3): the name by static-table index (nameIndex > 0) or as a
// literal, the value (value+suffix) as a plain (non-Huffman) literal. It is
// written here rather than by the hpack.Encoder because this representation
// leaves the dynamic table untouched, so the encoder's state stays exact,
// and for the per-push values (the device token path, an apns-id) Huffman
// coding cost about a third of a microsecond per push to save ~20 bytes.
func appendNeverIndexed(dst []byte, nameIndex uint64, name, value, suffix string) []byte {
	dst = appendVarInt(dst, 0x10, 4, nameIndex)
	if nameIndex == 0 {
		dst = appendVarInt(dst, 0, 7, uint64(len(name)))
		dst = append(dst, name...)
	}
	dst = appendVarInt(dst, 0, 7, uint64(len(value)+len(suffix)))
	dst = append(dst, value...)
	return append(dst, suffix...)
}

// appendVarInt appends i as an HPACK integer with an n-bit prefix, the
// prefix's byte starting as first (RFC 7541 §5.1).
func appendVarInt(dst []byte, first byte, n uint, i uint64) []byte {
	limit := uint64(1)<<n - 1
	if i < limit {
		return append(dst, first|byte(i))
	}
	dst = append(dst, first|byte(limit))
	for i -= limit; i >= 128; i >>= 7 {
		dst = append(dst, byte(0x80|i&0x7f))
	}
	return append(dst, byte(i))
}

// encodedFields caches the HPACK bytes of a run of fields that encoded to
// table indexes only. While the table does not change (tableGen), the same
// fields encode to the same bytes: in steady state the constant APNs
// headers (a ~200-byte JWT among them) are copied, not hashed and looked
// up per request. Unique fields are never indexed, so they never change
// the table.
type encodedFields struct {
	valid  bool
	gen    uint64
	method string
	fields []Field
	enc    []byte
}

func (e *encodedFields) matches(hdr []Field) bool {
	i := 0
	for _, f := range hdr {
		if f.Unique {
			continue
		}
		// Usually the very same strings: == then stops at the pointers.
		if i == len(e.fields) || e.fields[i].Name != f.Name || e.fields[i].Value != f.Value {
			return false
		}
		i++
	}
	return i == len(e.fields)
}

// writeDataLocked appends as much of body as the windows and the frame
// size allow and returns the rest.
func (c *Conn) writeDataLocked(st *Call, body []byte) []byte {
	for len(body) > 0 {
		n := min(int64(len(body)), c.sendWindow, st.sendWindow, int64(c.peerMaxFrame))
		if n <= 0 {
			return body
		}
		end := n == int64(len(body))
		_ = c.fw.WriteData(st.id, end, body[:n])
		c.sendWindow -= n
		st.sendWindow -= n
		body = body[n:]
		st.sentEnd = end
	}
	return body
}

// abandonLocked gives up on a stream for the caller (its ctx ended).
func (c *Conn) abandonLocked(st *Call) {
	st.finished = true // by the caller: nothing is sent on done
	if !st.closed {
		c.resetLocked(st, http2.ErrCodeCancel)
	}
	c.kickWriterLocked()
}

// resetLocked sends RST_STREAM and closes the stream on our side.
func (c *Conn) resetLocked(st *Call, code http2.ErrCode) {
	_ = c.fw.WriteRSTStream(st.id, code)
	c.closeStreamLocked(st)
}

// finishLocked decides a stream's outcome and tells its caller, once.
// Outside the reader the signal goes at once, so it must be the last touch
// of st: the caller may recycle st as soon as it has it, without mu.
func (c *Conn) finishLocked(st *Call, err error) {
	if st.finished {
		return
	}
	st.finished = true
	st.err = err
	if st.list == &c.windowQ {
		c.windowQ.remove(st)
		signal(st.wake)
	}
	if c.deferDone {
		c.doneBatch = append(c.doneBatch, st)
		return
	}
	g := st.group
	st.answered.Store(true)
	st.done <- struct{}{} // capacity 1, one send per use: never blocks
	g.finished()
}

// closeStreamLocked forgets a stream that is closed both ways and frees
// its slot.
func (c *Conn) closeStreamLocked(st *Call) {
	if st.closed {
		return
	}
	st.closed = true
	delete(c.streams, st.id)
	c.releaseSlotLocked()
	if (c.goAway || c.closing) && len(c.streams) == 0 {
		c.drainedLocked()
	}
}

// drainedLocked runs once the last stream is gone from a connection that
// takes no new ones: it closes, off the caller's goroutine.
func (c *Conn) drainedLocked() {
	if c.drainedClosed {
		return
	}
	c.drainedClosed = true
	close(c.drained)
	if c.err == nil {
		cause := errClosed
		if c.goAway {
			cause = errGoneAway
		}
		go c.fail(cause)
	}
}

// beginCloseLocked stops new streams and sends GOAWAY; the connection
// closes when the last stream finishes.
func (c *Conn) beginCloseLocked() {
	if c.closing || c.err != nil {
		return
	}
	c.closing = true
	c.usable.Store(false)
	_ = c.fw.WriteGoAway(0, http2.ErrCodeNo, nil)
	cause := errClosed
	if c.nextID > maxStreamID {
		cause = errIDsUsedUp
	}
	c.refuseWaitersLocked(fmt.Errorf("send request: %w: %w", cause, ErrUnprocessed))
	c.kickWriterLocked()
	if len(c.streams) == 0 {
		c.drainedLocked()
	}
}

func (c *Conn) kickWriterLocked() {
	if c.writerIdle && len(c.wbuf.B) > 0 {
		c.writerIdle = false
		c.wcond.Signal()
	}
}

// writeLoop is the group commit: while one batch is in the kernel, frames
// of the next requests accumulate in wbuf and leave together. Before taking
// a batch it yields once, so the callers the reader just woke append their
// next requests first (that took TestAPNsLoad from 0.75 write syscalls per
// push to about 0.1); with nothing else runnable the yield returns at once,
// so an idle connection adds no latency. No timers.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	c.mu.Lock()
	for {
		for len(c.wbuf.B) == 0 && !c.wstop {
			c.writerIdle = true
			c.wcond.Wait()
		}
		c.writerIdle = false
		if len(c.wbuf.B) == 0 {
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
		out := c.wbuf.B
		c.wbuf.B = c.wspare[:0]
		c.wspare = nil
		c.mu.Unlock()
		_, err := c.nc.Write(out)
		c.mu.Lock()
		if cap(out) <= maxSpareWriteBuf {
			c.wspare = out[:0]
		}
		if err != nil {
			if c.err == nil {
				c.err = fmt.Errorf("write frames: %w", err)
			}
			c.wstop = true
			c.wbuf.B = nil
			c.mu.Unlock()
			// The reader's next read fails and fails the streams.
			_ = c.nc.Close()
			return
		}
	}
}

// readLoop is the connection's one reader. It handles every frame already
// buffered under one lock acquisition and wakes the callers whose answers
// completed only after unlocking, so they do not wake into a held lock.
func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		fh, f, err := c.readFrame()
		c.mu.Lock()
		c.deferDone = true
		for err == nil {
			if err = c.handleFrameLocked(f); err != nil || !c.frameBuffered() {
				break
			}
			fh, f, err = c.readFrame()
		}
		if err != nil {
			err = c.readErrorLocked(fh, err)
		}
		c.deferDone = false
		c.kickWriterLocked()
		c.mu.Unlock()
		// Only the reader appends to doneBatch, and only while holding mu
		// with deferDone set: it is ours here.
		for i, st := range c.doneBatch {
			g := st.group // read first: once signalled, st may be recycled
			st.answered.Store(true)
			st.done <- struct{}{}
			g.finished()
			c.doneBatch[i] = nil
		}
		c.doneBatch = c.doneBatch[:0]

		if err != nil {
			var ce connError
			if errors.As(err, &ce) {
				c.goAwayAndFail(ce)
			} else {
				c.fail(err)
			}
			return
		}
	}
}

func (c *Conn) readFrame() (http2.FrameHeader, http2.Frame, error) {
	fh, err := c.fr.ReadFrameHeader()
	if err != nil {
		return fh, nil, err
	}
	f, err := c.fr.ReadFrameForHeader(fh)
	return fh, f, err
}

// frameBuffered reports whether a whole frame is already in the read
// buffer, so reading it cannot block.
func (c *Conn) frameBuffered() bool {
	if c.br.Buffered() < 9 {
		return false
	}
	h, _ := c.br.Peek(3)
	return c.br.Buffered() >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// readErrorLocked handles a ReadFrame error: a stream error on a frame
// other than a header block resets that stream and reading goes on (nil);
// anything else ends the connection (the error to fail it with).
func (c *Conn) readErrorLocked(fh http2.FrameHeader, err error) error {
	var se http2.StreamError
	if errors.As(err, &se) && fh.Type != http2.FrameHeaders && fh.Type != http2.FrameContinuation {
		c.streamErrorByIDLocked(se.StreamID, se.Code, fmt.Errorf("read frame: %w", err))
		return nil
	}
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		return connError{http2.ErrCode(ce), fmt.Errorf("read frame: %w", err)}
	case errors.Is(err, http2.ErrFrameTooLarge):
		return connError{http2.ErrCodeFrameSize, fmt.Errorf("read frame: %w", err)}
	case errors.As(err, &se):
		// A header block we could not decode leaves HPACK state unknown:
		// that ends the connection.
		return connError{http2.ErrCodeProtocol, fmt.Errorf("read frame: %w", err)}
	}
	return fmt.Errorf("read frame: %w", err)
}

// readClock is the read side of the connection; it notes when bytes last
// arrived, for the read-idle health check.
type readClock struct {
	net.Conn
	c *Conn
}

func (r readClock) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.c.lastRead.Store(r.c.sinceStart())
	}
	return n, err
}

func (c *Conn) handleFrameLocked(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onDataLocked(f)
	case *http2.HeadersFrame:
		return c.onHeadersLocked(f)
	case *http2.ContinuationFrame:
		return c.onHeaderFragmentLocked(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.RSTStreamFrame:
		return c.onResetLocked(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.applySettingsLocked(f)
	case *http2.PingFrame:
		if f.IsAck() {
			if c.pingOut && f.Data == c.pingData {
				c.pingOut = false
				// The idle clock starts again from this read.
				c.timer.Reset(c.cfg.ReadIdleTimeout)
			}
			return nil
		}
		return c.fw.WritePing(true, f.Data)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdateLocked(f)
	case *http2.GoAwayFrame:
		c.onGoAwayLocked(f)
		return nil
	case *http2.PushPromiseFrame:
		return protocolError("server sent PUSH_PROMISE with push disabled")
	}
	return nil // PRIORITY, unknown extension frames: ignored, as RFC 9113 asks
}

// idle reports whether id names a stream we never opened: frames on it
// are a connection error (RFC 9113 §5.1).
func (c *Conn) idle(id uint32) bool { return id%2 == 0 || id >= c.nextID }

func (c *Conn) onDataLocked(f *http2.DataFrame) error {
	n := int64(f.Length) // padding counts against flow control too
	if n > c.recvAvail {
		return connError{http2.ErrCodeFlowControl, errors.New("server overran the connection window")}
	}
	c.recvAvail -= n
	c.recvUnacked += n
	// Replenish in big steps: one WINDOW_UPDATE per threshold consumed,
	// including DATA for streams we already gave up on.
	if c.recvUnacked >= min(int64(c.cfg.ConnWindow)/2, 4<<20) {
		_ = c.fw.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvAvail += c.recvUnacked
		c.recvUnacked = 0
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if c.idle(f.StreamID) {
			return protocolError("DATA on idle stream %d", f.StreamID)
		}
		return nil
	}
	if st.finished {
		return nil
	}
	if n > st.recvAvail {
		c.streamErrorLocked(st, http2.ErrCodeFlowControl, errors.New("read response: server overran the stream window"))
		return nil
	}
	st.recvAvail -= n
	if !st.gotFinal {
		c.streamErrorLocked(st, http2.ErrCodeProtocol, errors.New("read response: DATA before response headers"))
		return nil
	}
	if room := c.cfg.MaxResponseBody - len(st.body); room > 0 {
		d := f.Data()
		st.body = append(st.body, d[:min(room, len(d))]...)
	}
	if f.StreamEnded() {
		c.remoteEndLocked(st)
		return nil
	}
	st.recvUnacked += n
	if st.recvUnacked >= int64(c.cfg.StreamWindow)/2 {
		_ = c.fw.WriteWindowUpdate(st.id, uint32(st.recvUnacked))
		st.recvAvail += st.recvUnacked
		st.recvUnacked = 0
	}
	return nil
}

func (c *Conn) onHeadersLocked(f *http2.HeadersFrame) error {
	if c.idle(f.StreamID) {
		return protocolError("HEADERS on idle stream %d", f.StreamID)
	}
	c.hdrID, c.hdrEnd = f.StreamID, f.StreamEnded()
	c.hdrBytes, c.hdrStatus, c.hdrBad = 0, 0, nil
	return c.onHeaderFragmentLocked(f.HeaderBlockFragment(), f.HeadersEnded())
}

// onHeaderFragmentLocked feeds one fragment of a header block to the
// decoder. The block is decoded even for streams we dropped: HPACK state
// is shared by the connection.
func (c *Conn) onHeaderFragmentLocked(frag []byte, end bool) error {
	// Look the stream up per fragment: between frames the lock is free,
	// and a caller may have abandoned it (and its state been reused).
	st := c.streams[c.hdrID]
	if st != nil && st.finished {
		st = nil
	}
	c.hdr = st
	c.dec.SetEmitEnabled(st != nil && c.hdrBad == nil)
	if _, err := c.dec.Write(frag); err != nil {
		c.hdr = nil
		return connError{http2.ErrCodeCompression, fmt.Errorf("decode response headers: %w", err)}
	}
	if !end {
		return nil
	}
	c.hdr = nil
	if err := c.dec.Close(); err != nil {
		return connError{http2.ErrCodeCompression, fmt.Errorf("decode response headers: %w", err)}
	}
	if st == nil {
		return nil
	}
	switch status := c.hdrStatus; {
	case c.hdrBad != nil:
		c.streamErrorLocked(st, http2.ErrCodeProtocol, fmt.Errorf("read response headers: %w", c.hdrBad))
	case st.gotFinal: // trailers
		if !c.hdrEnd {
			c.streamErrorLocked(st, http2.ErrCodeProtocol, errors.New("read response headers: second header block does not end the stream"))
			return nil
		}
		c.remoteEndLocked(st)
	case status == 0:
		c.streamErrorLocked(st, http2.ErrCodeProtocol, errors.New("read response headers: no :status"))
	case status < 200: // informational; the final answer follows
		if c.hdrEnd {
			c.streamErrorLocked(st, http2.ErrCodeProtocol, errors.New("read response headers: informational answer ends the stream"))
		}
	default:
		st.gotFinal = true
		st.status = status
		if c.hdrEnd {
			c.remoteEndLocked(st)
		}
	}
	return nil
}

// onField is the HPACK decoder's emit function; it runs under mu (inside
// dec.Write) and keeps only the fields an APNs answer needs.
func (c *Conn) onField(f hpack.HeaderField) {
	c.hdrBytes += f.Size()
	if c.hdrBytes > c.cfg.MaxResponseHeaderBytes {
		c.hdrBad = errors.New("header list too large")
		c.dec.SetEmitEnabled(false)
		return
	}
	st := c.hdr
	if st == nil {
		return
	}
	if f.IsPseudo() {
		if f.Name != ":status" || c.hdrStatus != 0 || !validStatus(f.Value) {
			c.hdrBad = fmt.Errorf("unexpected pseudo-header %s", f.Name)
			return
		}
		c.hdrStatus = int(f.Value[0]-'0')*100 + int(f.Value[1]-'0')*10 + int(f.Value[2]-'0')
		return
	}
	switch f.Name {
	case "apns-id":
		st.apnsID = f.Value
	case "apns-unique-id":
		st.uniqueID = f.Value
	case "retry-after":
		st.retryAfter = f.Value
	}
}

func validStatus(v string) bool {
	return len(v) == 3 && '1' <= v[0] && v[0] <= '5' && '0' <= v[1] && v[1] <= '9' && '0' <= v[2] && v[2] <= '9'
}

// remoteEndLocked handles the server's END_STREAM.
func (c *Conn) remoteEndLocked(st *Call) {
	c.finishLocked(st, nil)
	if st.sentEnd {
		c.closeStreamLocked(st)
	}
	// Otherwise the sender, woken by finishLocked, resets its half.
}

// streamErrorLocked fails one stream for a protocol problem we detected.
func (c *Conn) streamErrorLocked(st *Call, code http2.ErrCode, err error) {
	c.finishLocked(st, err)
	if !st.closed {
		c.resetLocked(st, code)
	}
}

func (c *Conn) streamErrorByIDLocked(id uint32, code http2.ErrCode, err error) {
	if st := c.streams[id]; st != nil {
		c.streamErrorLocked(st, code, err)
		return
	}
	if id != 0 {
		_ = c.fw.WriteRSTStream(id, code)
	}
}

func (c *Conn) onResetLocked(f *http2.RSTStreamFrame) error {
	st := c.streams[f.StreamID]
	if st == nil {
		if c.idle(f.StreamID) {
			return protocolError("RST_STREAM on idle stream %d", f.StreamID)
		}
		return nil
	}
	c.finishLocked(st, fmt.Errorf("read response: %w", StreamResetError{f.ErrCode}))
	c.closeStreamLocked(st)
	return nil
}

func (c *Conn) onWindowUpdateLocked(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if c.sendWindow+inc > maxWindow {
			return connError{http2.ErrCodeFlowControl, errors.New("server overflowed the connection send window")}
		}
		c.sendWindow += inc
		c.wakeWindowWaitersLocked()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if c.idle(f.StreamID) {
			return protocolError("WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		return nil
	}
	if st.sendWindow+inc > maxWindow {
		c.streamErrorLocked(st, http2.ErrCodeFlowControl, errors.New("send request: server overflowed the stream send window"))
		return nil
	}
	st.sendWindow += inc
	if st.list == &c.windowQ {
		c.windowQ.remove(st)
		signal(st.wake)
	}
	return nil
}

// wakeWindowWaitersLocked wakes every stream waiting for send window; each
// rechecks and waits again if there is still none for it. Such waits only
// happen when the server's windows are small, so the herd is small too.
func (c *Conn) wakeWindowWaitersLocked() {
	for st := c.windowQ.pop(); st != nil; st = c.windowQ.pop() {
		signal(st.wake)
	}
}

func (c *Conn) applySettingsLocked(f *http2.SettingsFrame) error {
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connError{http2.ErrCode(err.(http2.ConnectionError)), fmt.Errorf("apply server settings: invalid %v", s)}
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = s.Val
			c.grantSlotsLocked()
		case http2.SettingInitialWindowSize:
			// The change applies to every open stream (RFC 9113 §6.9.2)
			// and may make windows negative.
			delta := int64(s.Val) - c.peerStreamWindow
			c.peerStreamWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return connError{http2.ErrCodeFlowControl, errors.New("apply server settings: stream window overflow")}
				}
			}
			if delta > 0 {
				c.wakeWindowWaitersLocked()
			}
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSize(min(s.Val, encoderTableLimit))
			// The size update must open the next header block, and the
			// new size may evict: re-encode from scratch.
			c.tableGen++
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxHeaderListSize:
			c.peerMaxHeaders = uint64(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.fw.WriteSettingsAck()
}

func (c *Conn) onGoAwayLocked(f *http2.GoAwayFrame) {
	debug := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(f.DebugData()[:min(len(f.DebugData()), 128)]))
	cause := fmt.Sprintf("server sent GOAWAY (%v, last stream %d", f.ErrCode, f.LastStreamID)
	if debug != "" {
		cause += ", " + debug
	}
	c.goAwayErr = fmt.Errorf("send request: %s): %w", cause, ErrUnprocessed)
	if !c.goAway {
		c.cfg.Logger.Info("http/2 server is going away", "authority", c.cfg.Authority, "code", f.ErrCode.String(), "last_stream", f.LastStreamID, "debug", debug)
	}
	c.goAway = true
	c.usable.Store(false)
	c.refuseWaitersLocked(c.goAwayErr)
	for id, st := range c.streams {
		if id > f.LastStreamID {
			c.finishLocked(st, c.goAwayErr)
			c.closeStreamLocked(st)
		}
	}
	if len(c.streams) == 0 {
		c.drainedLocked()
	}
}

// goAwayAndFail tells the server why we hang up, then fails.
func (c *Conn) goAwayAndFail(ce connError) {
	c.mu.Lock()
	if !c.failed {
		_ = c.fw.WriteGoAway(0, ce.code, nil)
	}
	c.mu.Unlock()
	c.fail(ce)
}

// fail ends the connection: every stream in flight fails with a transient
// error, every slot waiter with an ErrUnprocessed one. The writer gets a
// moment to flush (a GOAWAY, RST_STREAMs) before the socket closes.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = cause
	}
	if c.failed {
		c.mu.Unlock()
		return
	}
	c.failed = true
	c.usable.Store(false)
	lost := fmt.Errorf("read response: connection lost: %w", c.err)
	for _, st := range c.streams {
		st.closed = true
		c.finishLocked(st, lost) // last touch: see finishLocked
	}
	// Callers granted a slot but not yet sending still hold theirs and give
	// it back themselves.
	c.active -= uint32(len(c.streams))
	clear(c.streams)
	c.refuseWaitersLocked(fmt.Errorf("send request: %w: %w", c.err, ErrUnprocessed))
	c.wstop = true
	c.wcond.Signal()
	if c.timer != nil {
		c.timer.Stop()
	}
	if !c.drainedClosed {
		c.drainedClosed = true
		close(c.drained)
	}
	c.mu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	<-c.writerDone
	_ = c.nc.Close()
}

// healthCheck runs on the read-idle timer: after ReadIdleTimeout without a
// frame it sends a PING, and closes the connection if no ACK comes within
// PingTimeout.
func (c *Conn) healthCheck() {
	now := c.sinceStart()
	var dead error
	c.mu.Lock()
	switch {
	case c.failed:
	case c.pingOut && now-c.pingSent >= int64(c.cfg.PingTimeout):
		dead = fmt.Errorf("check connection health: no PING ack within %v", c.cfg.PingTimeout)
	case c.pingOut:
		c.timer.Reset(time.Duration(c.pingSent + int64(c.cfg.PingTimeout) - now))
	default:
		if idle := now - c.lastRead.Load(); idle < int64(c.cfg.ReadIdleTimeout) {
			c.timer.Reset(c.cfg.ReadIdleTimeout - time.Duration(idle))
			break
		}
		c.pingSeq++
		for i := range c.pingData {
			c.pingData[i] = byte(c.pingSeq >> (8 * i))
		}
		_ = c.fw.WritePing(false, c.pingData)
		c.kickWriterLocked()
		c.pingOut, c.pingSent = true, now
		c.timer.Reset(c.cfg.PingTimeout)
	}
	c.mu.Unlock()
	if dead != nil {
		c.cfg.Logger.Warn("http/2 connection failed its health check", "authority", c.cfg.Authority, "err", dead)
		c.fail(dead)
	}
}

// Close shuts down gracefully: no new streams, GOAWAY, then close once the
// streams in flight finish or CloseTimeout passes (those still running
// fail).
func (c *Conn) Close() error {
	c.mu.Lock()
	c.beginCloseLocked()
	c.mu.Unlock()
	t := time.NewTimer(c.cfg.CloseTimeout)
	select {
	case <-c.drained:
	case <-t.C:
	}
	t.Stop()
	c.fail(errClosed)
	<-c.readerDone
	return nil
}

// parkLocked queues st on q and gives up c.mu until st is woken or ctx
// ends; it returns with c.mu held, st off the queue and its wake channel
// empty, and ctx's error if ctx ended first (st may have been woken too:
// callers check what they were waiting for).
func (c *Conn) parkLocked(ctx context.Context, st *Call, q *waitList) error {
	q.push(st)
	c.mu.Unlock()
	var ctxErr error
	select {
	case <-st.wake:
	case <-ctx.Done():
		ctxErr = ctx.Err()
	}
	c.mu.Lock()
	if st.list != nil {
		st.list.remove(st)
	}
	drain(st.wake)
	return ctxErr
}
