package deliverylog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Segment states, by file suffix.
const (
	suffixOpen = ".open" // being written (or left by a crash: sealed by the next Open)
	suffixSeg  = ".seg"  // closed, not yet exported
	suffixDone = ".done" // closed and exported
)

// SegmentFile is one segment on disk.
type SegmentFile struct {
	ID    int64
	Path  string
	State string // "open", "closed" or "exported"
	Size  int64
}

func segmentName(id int64, suffix string) string { return fmt.Sprintf("%020d%s", id, suffix) }

// ListSegments returns dir's segments in id order.
func ListSegments(dir string) ([]SegmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list delivery log segments: %w", err)
	}
	var out []SegmentFile
	for _, e := range ents {
		name := e.Name()
		ext := filepath.Ext(name)
		var state string
		switch ext {
		case suffixOpen:
			state = "open"
		case suffixSeg:
			state = "closed"
		case suffixDone:
			state = "exported"
		default:
			continue
		}
		id, err := strconv.ParseInt(strings.TrimSuffix(name, ext), 10, 64)
		if err != nil || len(name)-len(ext) != 20 {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile (pruned, renamed)
		}
		out = append(out, SegmentFile{ID: id, Path: filepath.Join(dir, name), State: state, Size: info.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// appendFrame frames payload p[start:] in place: the caller reserved
// frameHeader bytes at start before appending the payload.
func sealFrame(b []byte, start int) {
	p := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(p, castagnoli))
}

// ScanStats says how a segment read ended.
type ScanStats struct {
	Records int
	// Torn: the file ends inside a frame (a crash in the middle of a write);
	// the partial frame is ignored.
	Torn bool
	// Corrupt: a frame's length or checksum is wrong at Offset; nothing
	// from there on is returned.
	Corrupt bool
	// Offset is where reading stopped.
	Offset int64
}

// ScanFile reads the segment at path and calls fn for each record that
// verified, in order. The record's strings alias a reused buffer unless
// copyOut is set: fn must copy what it keeps otherwise. It stops at a torn
// tail or a bad frame (see ScanStats) without error; errors are I/O errors
// and fn's.
func ScanFile(path string, copyOut bool, fn func(*Record) error) (ScanStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return ScanStats{}, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	id, _ := strconv.ParseInt(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), 10, 64)
	return scan(bufio.NewReaderSize(f, 256<<10), id, copyOut, fn)
}

func scan(r io.Reader, segment int64, copyOut bool, fn func(*Record) error) (ScanStats, error) {
	var (
		st   ScanStats
		hdr  [frameHeader]byte
		buf  []byte
		head segmentHeader
		rec  Record
		seq  int32
	)
	for first := true; ; first = false {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				st.Torn = true
			} else if !errors.Is(err, io.EOF) {
				return st, fmt.Errorf("read segment: %w", err)
			}
			return st, nil
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n == 0 || n > maxFrame {
			// Zeros past the last write are what a crash leaves when the
			// file system extended the file before the data landed: a torn
			// tail, not corruption, if nothing but zeros follows.
			if n == 0 && binary.LittleEndian.Uint32(hdr[4:]) == 0 && allZero(r) {
				st.Torn = true
			} else {
				st.Corrupt = true
			}
			return st, nil
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				st.Torn = true
				return st, nil
			}
			return st, fmt.Errorf("read segment: %w", err)
		}
		if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			st.Corrupt = true
			return st, nil
		}
		if first {
			h, err := decodeHeader(buf)
			if err != nil {
				st.Corrupt = true
				return st, nil
			}
			head = h
			st.Offset += int64(frameHeader + n)
			continue
		}
		if err := decodeRecord(buf, &rec, copyOut); err != nil {
			st.Corrupt = true
			return st, nil
		}
		rec.Daemon, rec.Shard, rec.Segment, rec.Seq = head.Daemon, head.Shard, segment, seq
		seq++
		if err := fn(&rec); err != nil {
			return st, err
		}
		st.Records++
		st.Offset += int64(frameHeader + n)
	}
}

// allZero reports whether the rest of r is zero bytes.
func allZero(r io.Reader) bool {
	var b [4096]byte
	for {
		n, err := r.Read(b[:])
		for _, c := range b[:n] {
			if c != 0 {
				return false
			}
		}
		if err != nil {
			return errors.Is(err, io.EOF)
		}
	}
}
