package vinequeue_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// killWhenReady runs this test binary's test name as a child process, with
// env added to its environment, waits for the child to print ready as a
// line of its own on stdout, and SIGKILLs it. It fails the test if the
// child ends first, is not ready within a minute, or wrote a panic or a
// data race to stderr, and skips where the test binary cannot be
// re-executed (an emulated run).
func killWhenReady(t *testing.T, name, ready string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$")
	cmd.Env = append(os.Environ(), env...)
	var stderr capped
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			t.Skipf("needs to re-execute the test binary, which fails here (emulated run?): %v", err)
		}
		t.Fatal(err)
	}
	isReady := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == ready {
				isReady <- true
				return
			}
		}
		isReady <- false
	}()
	select {
	case ok := <-isReady:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("child ended before it was ready: %s", stderr.tail())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		t.Fatalf("child not ready in time: %s", stderr.tail())
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if s := stderr.String(); strings.Contains(s, "panic") || strings.Contains(s, "DATA RACE") {
		t.Fatalf("child: %s", stderr.tail())
	}
}
