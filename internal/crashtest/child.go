package crashtest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child is this test binary run again as a child process that runs one
// test (its child half, selected by an environment variable the caller
// passes) until a crash test SIGKILLs it, or until it ends by itself.
//
// Every crash test goes through it, so that each one skips the same way
// where the binary cannot be re-executed, catches a child that died before
// its kill, and reads the same signs of a crash (a panic, a fatal error, a
// data race) in the child's stderr.
type Child struct {
	t        *testing.T
	cmd      *exec.Cmd
	stderr   capped
	exited   chan struct{} // closed once the child has ended and its output is read
	err      error         // cmd.Wait's result, set before exited is closed
	killedAt time.Time     // see KilledAt
}

// Start starts the test named name as a child, with env added to its
// environment. onLine, if not nil, is called with every line the child
// writes to stdout, in order, from one goroutine; the last call has
// returned once the child has ended (End, Kill or KillAfter returned). A
// line the kill cut short is not passed. The test is skipped where the
// test binary cannot be re-executed (an emulated run).
func Start(t *testing.T, name string, onLine func(string), env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$")
	cmd.Env = append(os.Environ(), env...)
	c := &Child{t: t, cmd: cmd, exited: make(chan struct{})}
	cmd.Stderr = &c.stderr
	if onLine != nil {
		// exec copies stdout on a goroutine of its own, and Wait returns
		// only once that copy is done: every line has been passed on.
		cmd.Stdout = &lineWriter{onLine: onLine}
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("needs to re-execute the test binary, which fails here (emulated run?): %v", err)
		}
		t.Fatalf("re-exec of the test binary: %v", err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c
}

// Ended reports, without waiting, whether the child has ended.
func (c *Child) Ended() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// End waits for the child to end by itself and returns how it ended.
func (c *Child) End() error {
	<-c.exited
	return c.err
}

// Kill SIGKILLs the child, unless it has ended, and waits until it has.
func (c *Child) Kill() {
	if !c.Ended() {
		c.killedAt = time.Now()
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-c.exited
}

// KillAfter SIGKILLs the child d from now. If the child ends before that,
// it is not killed, and KillAfter says how it ended.
func (c *Child) KillAfter(d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.exited:
		return fmt.Errorf("child ended before its kill: %v: %s", c.err, c.stderr.tail())
	case <-timer.C:
	}
	c.Kill()
	return nil
}

// KillWhen SIGKILLs the child once ready is closed. It fails the test if
// the child ends first or ready is not closed within a minute.
func (c *Child) KillWhen(ready <-chan struct{}) {
	c.t.Helper()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	select {
	case <-ready:
		c.Kill()
	case <-c.exited:
		c.t.Fatalf("child ended before it was ready: %v: %s", c.err, c.stderr.tail())
	case <-timer.C:
		c.Kill()
		c.t.Fatalf("child not ready in a minute: %s", c.stderr.tail())
	}
}

// KilledAt is when Kill sent SIGKILL: the moment a crash test's "before
// the kill" means. It is the zero time if the child ended by itself first.
func (c *Child) KilledAt() time.Time { return c.killedAt }

// StderrTail is the end of what the child wrote to stderr, on one line, for
// a report (a data race's stacks in full).
func (c *Child) StderrTail() string { return c.stderr.tail() }

// Crashed is the tail of the child's stderr if it shows a panic, a fatal
// error, a data race or one of also; "" if it shows none.
func (c *Child) Crashed(also ...string) string {
	s := c.stderr.String()
	for _, sign := range append([]string{"panic", "fatal error", "DATA RACE"}, also...) {
		if strings.Contains(s, sign) {
			return c.stderr.tail()
		}
	}
	return ""
}

// KillWhenReady runs this test binary's test name as a child process, with
// env added to its environment, waits for the child to print ready as a
// line of its own on stdout, and SIGKILLs it. It fails the test if the
// child ends first, is not ready within a minute, or crashed (Crashed).
func KillWhenReady(t *testing.T, name, ready string, env ...string) {
	t.Helper()
	isReady := make(chan struct{})
	var once sync.Once
	c := Start(t, name, func(line string) {
		if line == ready {
			once.Do(func() { close(isReady) })
		}
	}, env...)
	c.KillWhen(isReady)
	if s := c.Crashed(); s != "" {
		t.Fatalf("child: %s", s)
	}
}

// lineWriter passes each complete line written to it to onLine.
type lineWriter struct {
	onLine  func(string)
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			return n, nil
		}
		line := p[:i]
		if len(w.partial) > 0 {
			line = append(w.partial, line...)
			w.partial = w.partial[:0]
		}
		w.onLine(string(line))
		p = p[i+1:]
	}
}

// capped keeps the first 64 KiB written to it (a child's stderr).
type capped struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := 64<<10 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// tail is the last lines of stderr, on one line, for a report.
func (c *capped) tail() string {
	s := strings.TrimSpace(c.String())
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "fatal error") || strings.HasPrefix(l, "panic:") || strings.Contains(l, "DATA RACE") {
			lines = lines[i:]
			break
		}
	}
	n := 3
	if len(lines) > 0 && strings.Contains(lines[0], "DATA RACE") {
		n = 40 // both stacks: a race report is useless without them
	}
	return strings.Join(lines[:min(len(lines), n)], " | ")
}

// ReadLog reads a log the child appended to, one write per line, up to its
// last newline. The kill can cut the child's last write short: the kernel
// copies a write into the page cache a page at a time and gives up between
// two pages once SIGKILL is pending, so a line that straddles a page
// boundary can end half written (11 of 3,000 kills of a child appending
// 45-byte lines from 8 goroutines left one, each at a 4 KiB boundary). A
// cut line reads as another event (a time short of digits, an item's id cut
// in two), so it is dropped, as Start drops a cut stdout line. An error is
// os.ReadFile's (fs.ErrNotExist for a child killed before it made its log).
func ReadLog(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return data[:bytes.LastIndexByte(data, '\n')+1], nil
}

// LogFields is ReadLogFields for a test: none (said in t's log) when the
// child was killed before it made its log, which it does before it accepts
// anything (on a loaded machine its start can outlast the kill's moment);
// t fails on any other error.
func LogFields(t testing.TB, path string) [][]string {
	t.Helper()
	lines, err := ReadLogFields(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Logf("%s: the child was killed before it began", path)
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// ReadLogFields is ReadLog split into lines, each line into its
// space-separated fields; empty lines are left out.
func ReadLogFields(path string) ([][]string, error) {
	data, err := ReadLog(path)
	if err != nil {
		return nil, err
	}
	var lines [][]string
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			lines = append(lines, f)
		}
	}
	return lines, nil
}
