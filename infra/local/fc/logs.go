package fc

import (
	"bytes"
	"io"
	"sync"
)

// DefaultLogLimit bounds the output kept per function.
const DefaultLogLimit = 32 << 20

// logBuffer keeps a function's stdout and stderr (all instances, interleaved
// by line as written) and copies complete lines, prefixed, to a tee.
type logBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	limit     int
	truncated bool
	tee       io.Writer
	prefix    []byte
	partial   []byte // an incomplete line waiting for its newline (tee only)
}

func newLogBuffer(limit int, tee io.Writer, prefix string) *logBuffer {
	return &logBuffer{limit: limit, tee: tee, prefix: []byte(prefix)}
}

// Write implements io.Writer; it never fails.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.limit - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
			l.truncated = true
		} else {
			l.buf.Write(p)
		}
	} else if len(p) > 0 {
		l.truncated = true
	}
	if l.tee != nil {
		data := append(l.partial, p...)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line := make([]byte, 0, len(l.prefix)+i+1)
			line = append(append(line, l.prefix...), data[:i+1]...)
			_, _ = l.tee.Write(line)
			data = data[i+1:]
		}
		l.partial = append([]byte(nil), data...)
	}
	return len(p), nil
}

// bytes returns a copy of what was kept and whether output was dropped.
func (l *logBuffer) bytes() ([]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes()), l.truncated
}
