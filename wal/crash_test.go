package wal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child process that
// appends to a WAL in a loop and reports on stdout, one line per fact:
//
//	S <corrupt>          after Open: records Open counted as lost
//	R <id> <item>        an item replayed from the previous incarnations
//	D <records>          Replay finished
//	A <id> <item>        AppendItem returned <id> for <item>: it is durable
//	K <id>               about to Ack(<id>): record <id> was delivered (a
//	                     kill may come before or after the Ack, so the
//	                     record may or may not come back)
//
// The parent SIGKILLs the child at a random moment and starts it again, and
// checks after every restart that each item acknowledged by an A line and
// not yet delivered (no K line for its id) was replayed: a kill loses no
// durable item. A kill mid-write must not look like damage either (S 0).
// Items are "<incarnation>/<goroutine>/<seq>", so the parent knows them all.
//
// A Queue-level crash test can reuse the same shape: runCrashChild and
// crashIncarnation are independent of what the child does.
const crashChildEnv = "VINEWAL_CRASH_CHILD"

// crashChildMain runs in the child process (see TestMain).
func crashChildMain() int {
	dir := os.Getenv(crashChildEnv)
	inc := os.Getenv("VINEWAL_CRASH_INCARNATION")
	out := &lineWriter{w: os.Stdout}
	l, err := Open(dir, Options{SegmentSize: 64 << 10, AckInterval: time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	out.printf("S %d\n", l.Stats().Corrupt)
	var replayed []uint64
	err = l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		replayed = append(replayed, id)
		return ForEachItem(p, func(item []byte) error {
			out.printf("R %d %s\n", id, item)
			return nil
		})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "replay:", err)
		return 2
	}
	out.printf("D %d\n", len(replayed))
	// Deliver the replayed records, in a scrambled order as concurrent Send
	// workers would.
	rand.Shuffle(len(replayed), func(i, j int) { replayed[i], replayed[j] = replayed[j], replayed[i] })
	for _, id := range replayed {
		out.printf("K %d\n", id)
		if err := l.Ack(id); err != nil {
			fmt.Fprintln(os.Stderr, "ack:", err)
			return 2
		}
	}
	// Appenders until killed; one in three records gets acknowledged a
	// little later (by the appender that received it first, out of order).
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var pending []uint64
			for seq := 0; ; seq++ {
				item := fmt.Sprintf("%s/%d/%d", inc, g, seq)
				id, err := l.AppendItem([]byte(item))
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(2)
				}
				out.printf("A %d %s\n", id, item)
				if id%3 == 0 {
					pending = append(pending, id)
				}
				if len(pending) > 8 {
					k := rand.IntN(len(pending))
					id := pending[k]
					pending = append(pending[:k], pending[k+1:]...)
					out.printf("K %d\n", id)
					if err := l.Ack(id); err != nil {
						fmt.Fprintln(os.Stderr, "ack:", err)
						os.Exit(2)
					}
				}
			}
		}()
	}
	wg.Wait()
	return 0
}

// lineWriter writes each line with one write(2), so a kill never leaves
// half a line followed by another line.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) printf(format string, args ...any) {
	lw.mu.Lock()
	fmt.Fprintf(lw.w, format, args...)
	lw.mu.Unlock()
}

// crashIncarnation is what the parent learned from one child's stdout.
type crashIncarnation struct {
	corrupt    int
	replayDone bool
	replayed   map[string]uint64 // item -> id
	appended   map[string]uint64 // item -> id
	acked      map[uint64]bool
}

// runCrashChild starts the test binary as a crash child with env, lets it
// run until it has printed at least minLines lines and then a random
// while longer, kills it with SIGKILL and returns its stdout lines.
func runCrashChild(t *testing.T, env []string, minLines int, rng *rand.Rand) []string {
	t.Helper()
	cmd, lines, stderr := startChild(t, env)
	var got []string
	deadline := time.After(60 * time.Second)
	var killAt <-chan time.Time
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				err := cmd.Wait()
				if killAt == nil || !isKilled(err) {
					t.Fatalf("crash child ended by itself (%v) after %d lines; stderr:\n%s", err, len(got), stderr.String())
				}
				return got
			}
			got = append(got, line)
			if len(got) == minLines {
				killAt = time.After(time.Duration(rng.IntN(80000)) * time.Microsecond)
			}
		case <-killAt:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killAt = make(chan time.Time) // now wait for stdout to close
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("crash child printed only %d lines in 60 s; stderr:\n%s", len(got), stderr.String())
		}
	}
}

// startChild starts the test binary as a child with env added, and returns
// its stdout lines as they come (the channel closes at its end).
func startChild(t *testing.T, env []string) (*exec.Cmd, <-chan string, *strings.Builder) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	if runtime.GOARCH != hostArch() {
		// Under qemu-user there is no binfmt_misc here: run the child
		// through the same emulator.
		qemu, err := exec.LookPath("qemu-" + qemuArch() + "-static")
		if err != nil {
			t.Skipf("cannot re-execute a %s test binary: %v", runtime.GOARCH, err)
		}
		cmd = exec.Command(qemu, exe, "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), env...)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && errors.Is(pe.Err, syscall.ENOEXEC) {
			t.Skipf("cannot re-execute the test binary: %v", err)
		}
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines, stderr
}

func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func parseCrashLines(t *testing.T, lines []string) crashIncarnation {
	t.Helper()
	inc := crashIncarnation{corrupt: -1, replayed: map[string]uint64{}, appended: map[string]uint64{}, acked: map[uint64]bool{}}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("bad line %q", line)
		}
		id, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		switch {
		case f[0] == "S":
			inc.corrupt = int(id)
		case f[0] == "D":
			inc.replayDone = true
		case f[0] == "R" && len(f) == 3:
			inc.replayed[f[2]] = id
		case f[0] == "A" && len(f) == 3:
			inc.appended[f[2]] = id
		case f[0] == "K":
			inc.acked[id] = true
		default:
			t.Fatalf("bad line %q", line)
		}
	}
	return inc
}

func TestCrashRecoveryLosesNoAcknowledgedItem(t *testing.T) {
	restarts := 24
	if testing.Short() {
		restarts = 6
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))
	// item -> id of the records acknowledged as durable and not delivered.
	outstanding := map[string]uint64{}
	totalAppended := 0
	for n := 0; n <= restarts; n++ {
		env := []string{crashChildEnv + "=" + dir, fmt.Sprintf("VINEWAL_CRASH_INCARNATION=%d", n)}
		inc := parseCrashLines(t, runCrashChild(t, env, 1+rng.IntN(500), rng))
		if inc.corrupt != 0 {
			t.Fatalf("incarnation %d: Open counted %d corrupt records after a SIGKILL", n, inc.corrupt)
		}
		for item, id := range outstanding {
			rid, ok := inc.replayed[item]
			if !ok && !inc.replayDone {
				continue // killed while replaying: it must come back next time
			}
			if !ok {
				r, err := Inspect(dir)
				t.Logf("directory now: %+v (%v)", r, err)
				for _, s := range r.Segments {
					t.Logf("segment %+v", s)
				}
				t.Fatalf("incarnation %d: durable item %q (record %d) was neither delivered nor replayed", n, item, id)
			}
			if rid != id {
				t.Fatalf("incarnation %d: item %q replayed as record %d, appended as %d", n, item, rid, id)
			}
		}
		for item, id := range inc.appended {
			outstanding[item] = id
		}
		totalAppended += len(inc.appended)
		for item, id := range outstanding {
			if inc.acked[id] {
				delete(outstanding, item)
			}
		}
	}
	t.Logf("%d restarts, %d items acknowledged, %d outstanding at the end", restarts, totalAppended, len(outstanding))
	// Leave no child's WAL behind open: the last one was killed too.
	if _, err := os.Stat(filepath.Join(dir, lockFileName)); err != nil {
		t.Fatal(err)
	}
}

func hostArch() string {
	if a := os.Getenv("VINEWAL_HOST_GOARCH"); a != "" {
		return a
	}
	out, err := exec.Command("uname", "-m").Output()
	if err != nil {
		return runtime.GOARCH
	}
	switch strings.TrimSpace(string(out)) {
	case "x86_64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	}
	return runtime.GOARCH
}

func qemuArch() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64"
	}
	return runtime.GOARCH
}
