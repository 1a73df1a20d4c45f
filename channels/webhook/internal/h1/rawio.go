package h1

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// One write and one read per request.
//
// Go's net.Conn reads before it waits: a read right after the request has
// gone out finds nothing yet (the receiver has not even been scheduled), so
// every request paid a read that returned EAGAIN before the goroutine
// parked, 3.00 read+write system calls per request where the exchange needs
// 2 (notifyd bench webhook). Waiting for readability first is not safe on
// its own: syscall.RawConn.Read rearms the poller before it calls f, and an
// answer that arrived between the write and that rearming would be
// forgotten, leaving the request to its deadline. So the write moves inside
// the RawConn.Read callback, after the rearming: the answer cannot arrive
// before the poller is waiting for it, and the first read happens once the
// socket is readable.
//
// The hazard left: bytes a server sent unasked while the connection was
// idle (a 408, a FIN) arrived before the rearming and wake nobody. A closed
// server answers the request with a reset, which wakes the read; for the
// rest, a connection idle for peekAfterIdle or longer is peeked when taken
// from the pool (unasked) and dropped if anything is there, so only a
// server that sends unasked bytes within that time (or between the peek
// and the write) and then neither answers nor closes makes a request wait
// for its deadline. A peek for every request would cost the system call
// this file saves.
const peekAfterIdle = 500 * time.Millisecond

// rawReader is the connection's reader under its bufio.Reader: with a
// request set (send), its next Read writes the request, waits, and reads
// the answer's first bytes straight into bufio's buffer; otherwise it is
// the net.Conn's Read.

type rawReader struct {
	nc  net.Conn
	rc  syscall.RawConn // nil: the connection offers none (then send is never set)
	req []byte          // the request the next Read writes first
	// wrote is how much of req the raw write took; the rest, if any, goes
	// through nc.Write (rested).
	wrote  int
	rested bool

	// The state of one Read through rc, kept here so that step, bound once
	// per connection, costs no allocation per request.
	step func(fd uintptr) bool
	p    []byte
	n    int
	err  error
	eof  bool
}

func newRawReader(nc net.Conn) *rawReader {
	r := &rawReader{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
			r.step = r.writeThenRead
		}
	}
	return r
}

// unasked reports whether the server sent something, or closed, while the
// connection sat idle: a 408 or a FIN before an idle timeout's close. Such
// a connection must not carry a request, whose answer those bytes would
// be taken for (net/http's Transport notices them with its read loop; this
// transport has none, so a connection back from a pause is peeked once,
// without waiting and without consuming). A connection offering no raw
// access is not peeked.
func (r *rawReader) unasked() bool {
	return r.rc != nil && unaskedOn(r.rc)
}

// unaskedBytes is unasked for a connection without a rawReader (the
// pipelined path's).
func unaskedBytes(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	return err == nil && unaskedOn(rc)
}

func unaskedOn(rc syscall.RawConn) bool {
	var pending bool
	var b [1]byte
	err := rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pending = err == nil || (err != syscall.EAGAIN && err != syscall.EINTR) || n > 0
	})
	return pending || err != nil
}

// canSend reports whether the next Read can carry a request.
func (r *rawReader) canSend() bool { return r.rc != nil }

// send makes the next Read write req before it reads. The caller must then
// read through the bufio.Reader with nothing buffered, so that Read runs.
func (r *rawReader) send(req []byte) { r.req, r.wrote, r.rested = req, 0, false }

func (r *rawReader) Read(p []byte) (int, error) {
	if r.req == nil {
		return r.nc.Read(p)
	}
	r.p, r.n, r.err, r.eof = p, 0, nil, false
	err := r.rc.Read(r.step)
	req, n, ferr, eof := r.req, r.n, r.err, r.eof
	r.req, r.p, r.err = nil, nil, nil
	if err != nil {
		// The poller's answer (deadline, closed), named as net.Conn names it.
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		if r.wrote < len(req) {
			return 0, r.opError("write", err)
		}
		return 0, r.opError("read", err)
	}
	if ferr != nil {
		return 0, ferr
	}
	if r.wrote < len(req) {
		r.rested = true
		if _, err := r.nc.Write(req[r.wrote:]); err != nil {
			return 0, err
		}
		r.wrote = len(req)
		return r.nc.Read(p)
	}
	if eof {
		return 0, io.EOF
	}
	return n, nil
}

// writeThenRead is the RawConn.Read callback: the first call writes the
// request and asks to wait (false) once it is all out; a call after the
// socket turned readable reads.
func (r *rawReader) writeThenRead(fd uintptr) bool {
	if r.wrote < len(r.req) {
		w, err := ignoringEINTR(func() (int, error) { return syscall.Write(int(fd), r.req[r.wrote:]) })
		if w > 0 {
			r.wrote += w
		}
		switch {
		case err == syscall.EAGAIN:
			return true // the socket's buffer is full: the rest goes through nc.Write
		case err != nil:
			r.err = r.opError("write", os.NewSyscallError("write", err))
			return true
		}
		return r.wrote < len(r.req) // false: all out, wait for the answer
	}
	m, err := ignoringEINTR(func() (int, error) { return syscall.Read(int(fd), r.p) })
	switch {
	case err == syscall.EAGAIN:
		return false
	case err != nil:
		r.err = r.opError("read", os.NewSyscallError("read", err))
	case m == 0:
		r.eof = true
	default:
		r.n = m
	}
	return true
}

func (r *rawReader) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.nc.LocalAddr(), Addr: r.nc.RemoteAddr(), Err: err}
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != syscall.EINTR {
			return n, err
		}
	}
}
