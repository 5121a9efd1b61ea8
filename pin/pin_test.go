package pin

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// TestPinIDInRange checks the linknamed runtime.procPin from many goroutines:
// ids lie in [0, GOMAXPROCS), and nested pins agree (the goroutine cannot
// move while pinned).
func TestPinIDInRange(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	procs := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < cap(errs); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				a := Pin()
				b := Pin()
				Unpin()
				Unpin()
				if a != b || a < 0 || a >= procs {
					errs <- fmt.Sprintf("nested Pin returned P %d then %d (GOMAXPROCS %d)", a, b, procs)
					return
				}
				if i%32 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
