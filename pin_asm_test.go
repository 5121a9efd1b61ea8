//go:build linux && (amd64 || arm64) && !purego && go1.26 && !go1.27

package vinequeue

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/vineroute/vinequeue/pin"
)

// The build line above is maintained by pin/internal/genoffsets (same as
// pin_asm.go): these tests exist only where the assembly does. The offsets
// themselves are checked against DWARF by pin.TestGeneratedOffsetsMatchDWARF
// (the DWARF reader is internal to pin/).

// TestPinTokenIsRuntimeLocks checks that procPin really increments the
// runtime's m.locks and that procUnpin really decrements it: tok must alias
// the very counter runtime.procPin changes, and pins must balance.
func TestPinTokenIsRuntimeLocks(t *testing.T) {
	if err := checkPinToken(); err != nil {
		t.Fatal(err)
	}

	// Many goroutines, many pairs each, then the check again on whatever M
	// each goroutine ended on: any imbalance would leave that M's m.locks
	// above 0 and the next check would see it.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var (
		wg   sync.WaitGroup
		errs = make(chan error, 32)
	)
	for g := 0; g < cap(errs); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				_, tok := procPin()
				procUnpin(tok)
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
			errs <- checkPinToken()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := checkPinToken(); err != nil {
		t.Fatal(err)
	}
}

// checkPinToken pins once and checks, on the M it lands on, that the token is
// that M's m.locks: the runtime's own procPin/procUnpin move it by one, a
// nested procPin returns the same token and P, and everything balances.
func checkPinToken() error {
	pid, tok := procPin()
	base := *tok
	ref := pin.Pin()
	afterRuntimePin := *tok
	pin.Unpin()
	afterRuntimeUnpin := *tok

	pid2, tok2 := procPin()
	nested := *tok
	procUnpin(tok2)
	afterNested := *tok
	procUnpin(tok)

	switch {
	case base != 1:
		// Go code runs with m.locks == 0 (else it could not be preempted),
		// so our own pin must be the only one.
		return fmt.Errorf("m.locks = %d right after procPin, want 1", base)
	case ref != pid || pid2 != pid:
		return fmt.Errorf("P ids: procPin %d, runtime.procPin %d, nested procPin %d", pid, ref, pid2)
	case tok2 != tok:
		return fmt.Errorf("nested procPin token %p differs from %p on the same M", tok2, tok)
	case afterRuntimePin != base+1 || afterRuntimeUnpin != base:
		return fmt.Errorf("runtime.procPin moved *tok %d → %d → %d, want %d → %d → %d: tok is not m.locks",
			base, afterRuntimePin, afterRuntimeUnpin, base, base+1, base)
	case nested != base+1 || afterNested != base:
		return fmt.Errorf("nested procPin moved m.locks %d → %d → %d, want %d → %d → %d",
			base, nested, afterNested, base, base+1, base)
	}
	return nil
}
