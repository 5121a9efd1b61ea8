package crashtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const childEnv = "CRASHTEST_CHILD"

// TestChildHalf is the child: what it does is chosen by childEnv.
func TestChildHalf(t *testing.T) {
	switch os.Getenv(childEnv) {
	case "":
		t.Skip("only run as a child of the tests below")
	case "lines":
		fmt.Println("one")
		fmt.Print("tw")
		fmt.Println("o")
		fmt.Println("READY")
		// Idle until SIGKILL. Not select {}: with no other goroutine the
		// runtime would end the child as deadlocked.
		for {
			time.Sleep(time.Hour)
		}
	case "exit":
		fmt.Println("bye")
		os.Exit(3)
	case "panic":
		fmt.Println("READY")
		panic("boom")
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestKillWhenReady: every line before the ready line reaches the callback
// whole and in order, and the child is killed (it never ends by itself).
func TestKillWhenReady(t *testing.T) {
	var lines []string
	ready := make(chan struct{})
	c := Start(t, "TestChildHalf", func(l string) {
		lines = append(lines, l)
		if l == "READY" {
			close(ready)
		}
	}, childEnv+"=lines")
	c.KillWhen(ready)
	if c.KilledAt().IsZero() {
		t.Fatal("KilledAt is zero after a kill")
	}
	if want := []string{"one", "two", "READY"}; !slices.Equal(lines, want) {
		t.Fatalf("lines %q, want %q", lines, want)
	}
	if s := c.Crashed(); s != "" {
		t.Fatalf("Crashed = %q for a clean kill", s)
	}
}

// TestKillAfterChildEndedFirst: a child that ends before its kill is
// reported, not signalled.
func TestKillAfterChildEndedFirst(t *testing.T) {
	c := Start(t, "TestChildHalf", nil, childEnv+"=exit")
	if err := c.End(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("End = %v, want exit status 3", err)
	}
	if err := c.KillAfter(time.Hour); err == nil {
		t.Fatal("KillAfter reported nothing for a child that had ended")
	}
	if !c.KilledAt().IsZero() {
		t.Fatal("a child that ended by itself was signalled")
	}
}

// TestCrashedSeesAPanic: a child's panic shows in Crashed.
func TestCrashedSeesAPanic(t *testing.T) {
	c := Start(t, "TestChildHalf", nil, childEnv+"=panic")
	_ = c.End()
	if s := c.Crashed(); !strings.Contains(s, "boom") {
		t.Fatalf("Crashed = %q, want the panic", s)
	}
	if s := c.Crashed("no such sign"); s == "" {
		t.Fatal("Crashed with an extra sign lost the panic")
	}
}

// TestReadLogDropsACutLine: a log is read up to its last newline, so a
// line the kill cut short is not read as a whole one.
func TestReadLogDropsACutLine(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ log, want string }{
		{"K 1 2 3\nK 1 3 17", "K 1 2 3\n"},
		{"K 1 2 3\nK 1 3 4\n", "K 1 2 3\nK 1 3 4\n"},
		{"K 1 2", ""},
		{"", ""},
	} {
		path := filepath.Join(dir, "log")
		if err := os.WriteFile(path, []byte(c.log), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadLog(path)
		if err != nil || string(got) != c.want {
			t.Errorf("ReadLog of %q = %q, %v; want %q", c.log, got, err, c.want)
		}
	}
	if _, err := ReadLog(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadLog of a missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestReadLogFieldsSplitsCompleteLines: a log's complete lines, each split
// into its fields; empty lines and a line the kill cut short are left out.
func TestReadLogFieldsSplitsCompleteLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("K 1 2\n\nD a  b\nK 1 3 4"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLogFields(path)
	want := [][]string{{"K", "1", "2"}, {"D", "a", "b"}}
	if err != nil || !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("ReadLogFields = %q, %v; want %q", got, err, want)
	}
}
