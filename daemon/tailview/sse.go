package tailview

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxLineBytes bounds one SSE line: a snapshot of many campaigns is large,
// but a stream sending megabytes without a newline is not ours.
const MaxLineBytes = 8 << 20

// Event is one server-sent event.
type Event struct {
	Type  string // "message" when the stream named none
	ID    string
	Data  string
	Retry int // milliseconds; 0 when the event carried no retry field
}

// ReadEvents parses a text/event-stream (the WHATWG rules: LF, CRLF or CR
// line ends, ':' comments, multi-line data joined by '\n', a blank line
// dispatches) and calls fn for each event with data or a retry hint. It
// returns fn's error, a read error, or nil at EOF.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	sc.Split(scanLines)
	var (
		ev      Event
		data    strings.Builder
		hasData bool
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData || ev.Retry > 0 {
				ev.Data = data.String()
				if ev.Type == "" {
					ev.Type = "message"
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, hasData = Event{ID: ev.ID}, false // the last event id persists
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Type = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.ID = value
			}
		case "retry":
			if n, err := strconv.Atoi(value); err == nil && n >= 0 {
				ev.Retry = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("read event stream: line over %d bytes", MaxLineBytes)
		}
		return fmt.Errorf("read event stream: %w", err)
	}
	return nil
}

// scanLines splits on LF, CRLF or a lone CR.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // a CR at the buffer's end: LF may follow
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
