package vinequeue

import (
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// expvarRun makes the names unique per run: the expvar registry is
// process-global and keeps every name for good, also across -count runs.
var expvarRun atomic.Int64

func uniqueExpvarName(base string) string {
	return fmt.Sprintf("%s_%d", base, expvarRun.Add(1))
}

func TestPublishExpvar(t *testing.T) {
	var enqueued atomic.Uint64
	stats := func() Stats {
		return Stats{Enqueued: enqueued.Load(), Delivered: 3, Level: LevelSoft, BatchSize: 100}
	}
	name := uniqueExpvarName("vinequeue_test_publish")
	if err := PublishExpvar(name, stats); err != nil {
		t.Fatal(err)
	}
	enqueued.Store(42) // read at every visit, not at publication
	v := expvar.Get(name)
	if v == nil {
		t.Fatal("not published")
	}
	var got Stats
	if err := json.Unmarshal([]byte(v.String()), &got); err != nil {
		t.Fatalf("value %q is not a JSON Stats: %v", v.String(), err)
	}
	if want := stats(); got != want {
		t.Errorf("published %+v, want %+v", got, want)
	}
	if err := PublishExpvar(name, stats); !errors.Is(err, ErrExpvarExists) {
		t.Errorf("second publication: %v, want ErrExpvarExists", err)
	}
}

func TestPublishExpvarConcurrentSameName(t *testing.T) {
	name := uniqueExpvarName("vinequeue_test_concurrent")
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			switch err := PublishExpvar(name, func() Stats { return Stats{} }); {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, ErrExpvarExists):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := ok.Load(); n != 1 {
		t.Errorf("%d publications succeeded, want exactly 1", n)
	}
}

func TestPublishExpvarInvalid(t *testing.T) {
	if err := PublishExpvar("", func() Stats { return Stats{} }); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("empty name: %v", err)
	}
	if err := PublishExpvar("vinequeue_test_nil", nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil stats: %v", err)
	}
	if expvar.Get("vinequeue_test_nil") != nil {
		t.Error("published despite the error")
	}
}

// ExamplePublishExpvar publishes a queue's Stats; /debug/vars then shows
// them under "example_events".
func ExamplePublishExpvar() {
	stats := func() Stats { return Stats{Enqueued: 3, Delivered: 2, Buffered: 1} } // q.Stats in a program
	if err := PublishExpvar("example_events", stats); err != nil {
		fmt.Println(err)
		return
	}
	var vars map[string]any
	if err := json.Unmarshal([]byte(expvar.Get("example_events").String()), &vars); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(vars["Enqueued"], vars["Delivered"], vars["Buffered"])
	// Output:
	// 3 2 1
}
