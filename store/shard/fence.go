package shard

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A published shard file must never change under a mapping: the store
// publishes by rename. When it does anyway (a store bug, an operator's cp
// over the path, a full disk), a read of a page past the new end of a
// truncated file raises SIGBUS, which the Go runtime turns into a fatal
// error in whatever goroutine touched the page, and strings from the mapping
// travel the whole pipeline (addresses into channel workers). So the outcome
// is decided here, not at each read:
//
//  1. The Reader takes a read lease on the file (F_SETLEASE F_RDLCK). Any
//     open for writing or truncate(2) of the file then blocks in the kernel
//     and the process gets SIGIO first. The lease watcher turns each
//     mapping being broken into a private copy at the same address
//     (anonymous memory, read-only, moved over the mapping with mremap)
//     and only then gives the lease up, so the truncate or the
//     overwrite proceeds against a file no mapping reads any more. Readers
//     keep the exact bytes they verified; the refresher then sees the
//     damaged publication and keeps serving the copy, with a logged error.
//     The cost is the file's size in anonymous memory, for that generation
//     only.
//  2. Without a lease (the daemon does not own the file and lacks
//     CAP_LEASE, or the file system refuses leases), Check compares the
//     file's size with the mapping on every Store.Acquire and every refresh
//     poll, and the shard's own scans (block and segment verification) run
//     under debug.SetPanicOnFault. A truncation found either way replaces
//     the pages past the new end with zero pages, so nothing faults after
//     that; the generation is refused with ErrTruncated, and unverified
//     blocks in the zeroed range fail their checksums as corrupt blocks. A
//     read in another goroutine between the truncation and its detection
//     can still fault: that window is what the lease closes.

// ErrTruncated is returned (wrapped) for a generation whose file was
// truncated while mapped.
const ErrTruncated = sentinel("shard file truncated under its mapping")

// fence is a Reader's protection against its file changing under it.
type fence struct {
	mu        sync.Mutex
	file      *os.File // held for the lease and for Check; nil once unmapped
	leased    bool
	copied    bool  // the mapping is a private copy (lease broken)
	truncated int64 // the file's size when a truncation was found, or -1
}

// leaseWatch is process-wide because signals are: one SIGIO handler serves
// every leased Reader. Its goroutine exits when the last one is gone.
var leaseWatch struct {
	mu      sync.Mutex
	readers map[*Reader]struct{}
	sig     chan os.Signal
}

// arm keeps f for the Reader's lifetime and takes a read lease when it can.
func (r *Reader) arm(f *os.File) {
	r.fence.file = f
	r.fence.truncated = -1
	if len(r.data) == 0 {
		return
	}
	leaseWatch.mu.Lock()
	defer leaseWatch.mu.Unlock()
	if leaseWatch.readers == nil {
		leaseWatch.readers = map[*Reader]struct{}{}
		leaseWatch.sig = make(chan os.Signal, 1)
		signal.Notify(leaseWatch.sig, syscall.SIGIO)
		go watchLeases(leaseWatch.sig)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		if len(leaseWatch.readers) == 0 {
			stopWatchLocked()
		}
		return // EACCES (not the owner), EAGAIN (open for writing), no lease support: Check covers it
	}
	r.fence.leased = true
	leaseWatch.readers[r] = struct{}{}
}

func stopWatchLocked() {
	signal.Stop(leaseWatch.sig)
	close(leaseWatch.sig)
	leaseWatch.readers, leaseWatch.sig = nil, nil
}

func watchLeases(sig <-chan os.Signal) {
	for range sig {
		leaseWatch.mu.Lock()
		rs := make([]*Reader, 0, len(leaseWatch.readers))
		for r := range leaseWatch.readers {
			rs = append(rs, r)
		}
		leaseWatch.mu.Unlock()
		for _, r := range rs {
			r.breakLease()
		}
	}
}

// breakLease copies the mapping privately if the kernel is breaking the
// Reader's lease (another open for writing or a truncate is waiting).
func (r *Reader) breakLease() {
	fe := &r.fence
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if fe.file == nil || !fe.leased {
		return
	}
	t, err := unix.FcntlInt(fe.file.Fd(), unix.F_GETLEASE, 0)
	if err != nil || t != unix.F_UNLCK {
		return // not this one: during a break the lease reads as its target, unlocked
	}
	if err := privatize(r.data); err == nil {
		fe.copied = true
	}
	// On failure the mapping stays shared and Check reports a truncation.
	unix.FcntlInt(fe.file.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
	fe.leased = false
	r.unwatch()
}

func (r *Reader) unwatch() {
	leaseWatch.mu.Lock()
	defer leaseWatch.mu.Unlock()
	if _, ok := leaseWatch.readers[r]; !ok {
		return
	}
	delete(leaseWatch.readers, r)
	if len(leaseWatch.readers) == 0 {
		stopWatchLocked()
	}
}

// privatize replaces the shared mapping b with anonymous memory at the same
// address holding the same bytes. A private file mapping would not do: a
// truncate unmaps even its copied-on-write pages, and a read past the new
// end still faults. The file cannot change meanwhile: its writer waits for
// the lease. mremap swaps the copy in under the address space lock, so a
// concurrent reader sees the old bytes or the copy, never a hole.
func privatize(b []byte) error {
	n := uintptr(len(b))
	cp, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("copy shard mapping: %w", err)
	}
	copy(unsafe.Slice((*byte)(cp), n), b)
	if err := unix.Mprotect(unsafe.Slice((*byte)(cp), n), unix.PROT_READ); err != nil {
		unix.MunmapPtr(cp, n)
		return fmt.Errorf("copy shard mapping: %w", err)
	}
	if _, err := unix.MremapPtr(cp, n, unsafe.Pointer(&b[0]), n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
		unix.MunmapPtr(cp, n)
		return fmt.Errorf("copy shard mapping: %w", err)
	}
	return nil
}

// Leased reports whether the Reader holds a read lease on its file (see
// the top of this file).
func (r *Reader) Leased() bool {
	r.fence.mu.Lock()
	defer r.fence.mu.Unlock()
	return r.fence.leased
}

// Check reports whether the Reader's file still covers its mapping. A file
// truncated under the mapping has its missing pages replaced by zero pages
// (so no read faults from then on) and the error wraps ErrTruncated. A
// mapping already turned into a private copy is always fine.
func (r *Reader) Check() error {
	fe := &r.fence
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if fe.copied || len(r.data) == 0 {
		return nil
	}
	if fe.truncated >= 0 {
		return r.truncatedError()
	}
	if fe.file == nil {
		return nil
	}
	st, err := fe.file.Stat()
	if err != nil {
		return fmt.Errorf("check shard %s: %w", r.path, err)
	}
	if st.Size() >= int64(len(r.data)) {
		return nil
	}
	r.zeroTailLocked(st.Size())
	return r.truncatedError()
}

func (r *Reader) truncatedError() error {
	return fmt.Errorf("shard %s: the file was truncated to %d bytes while generation %d (%d bytes) was mapped; the store must publish by rename: %w",
		r.path, r.fence.truncated, r.generation, len(r.data), ErrTruncated)
}

// zeroTailLocked maps zero pages over the part of the mapping past size
// (fence.mu held).
func (r *Reader) zeroTailLocked(size int64) {
	r.fence.truncated = size
	page := int64(os.Getpagesize())
	from := (size + page - 1) / page * page
	if from >= int64(len(r.data)) {
		return
	}
	unix.MmapPtr(-1, 0, unsafe.Pointer(&r.data[from]), uintptr(int64(len(r.data))-from),
		unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED)
	// Blocks verified before the truncation may now read zeros: every block
	// is verified again on its next use, so the zeroed ones fail their
	// checksums (their rows leave as corrupt) and the intact ones serve.
	for _, t := range []*varTable{&r.rowTable, &r.pushTable, &r.strTable} {
		t.mu.Lock()
		for i := range t.blocks() {
			t.blocks()[i].state.Store(blockUnchecked)
		}
		t.mu.Unlock()
	}
	for i := range r.keyStates.get() {
		r.keyStates.get()[i].Store(blockUnchecked)
	}
}

// guardFault runs a scan of the mapping (a block or segment check). A fault
// (the file was truncated under it) fences the mapping and becomes an error.
func (r *Reader) guardFault(err *error) {
	p := recover()
	if p == nil {
		return
	}
	if _, ok := p.(interface{ Addr() uintptr }); !ok || r.fence.file == nil {
		panic(p)
	}
	if cerr := r.Check(); cerr != nil {
		*err = cerr
		return
	}
	*err = fmt.Errorf("shard %s: memory fault reading the mapping (%v): %w", r.path, p, ErrTruncated)
}

// disarm drops the lease and the file (the mapping is going away).
func (r *Reader) disarm() {
	fe := &r.fence
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if fe.file == nil {
		return
	}
	if fe.leased {
		unix.FcntlInt(fe.file.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
		fe.leased = false
		r.unwatch()
	}
	fe.file.Close()
	fe.file = nil
}
