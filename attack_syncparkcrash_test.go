package vinequeue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vq "github.com/vineroute/vinequeue"

	"github.com/vineroute/vinequeue/internal/crashtest"
)

// The Sync-and-ParkKeys crash child: keyed producers on a Sync WAL with
// ParkKeys, a sink that fails some keyed items for good the first time this
// process sends them (so their keys park behind a dead letter), and a
// goroutine that requeues every dead letter now and then (so keys are
// released, their parked items delivered from the dead-letter log and
// purged, while producers go on), Collectors 2, GOMAXPROCS moving; killed
// at a random moment. Its log, one write per event, each after the call it
// reports returned (a D line just before Send returns nil):
//
//	K <key> <seq>   EnqueueKey returned nil for k/<key>/<seq>
//	D <item> ...    a batch Send is about to return nil for
const syncParkChildEnv = "VINEQUEUE_ATTACK_SYNCPARK_CHILD"

// syncParkReady is the line the child prints once a keyed batch has been
// dead-lettered (a key parked).
const syncParkReady = "SYNCPARK-READY"

type syncParkSpec struct {
	Dir, Log string
	Run      int
}

func syncParkConfig(dir string, send vq.SendFunc[[]byte]) vq.Config[[]byte] {
	return vq.Config[[]byte]{
		Send:          send,
		BatchSize:     32,
		FlushInterval: 5 * time.Millisecond,
		Workers:       3,
		Collectors:    2,
		Retry:         vq.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond},
		ParkKeys:      true,
		WAL:           vq.WALConfig{Dir: dir, Mode: vq.Sync, SegmentSize: 1 << 20},
	}
}

// syncParkPoison: keys 0 to 3 have one poisoned item in 40.
func syncParkPoison(it []byte) bool {
	rest, ok := strings.CutPrefix(string(it), "k/")
	if !ok {
		return false
	}
	ks, ss, _ := strings.Cut(rest, "/")
	k, _ := strconv.ParseUint(ks, 10, 64)
	s, _ := strconv.ParseUint(ss, 10, 64)
	return k < 4 && s&0xffffffff%40 == 39
}

func syncParkChild(js string) {
	var spec syncParkSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		os.Exit(2)
	}
	f, err := os.OpenFile(spec.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		os.Exit(2)
	}
	emit := func(b []byte) { f.Write(b) }
	var healed sync.Map // poisoned items that failed once in this process
	send := func(_ context.Context, b [][]byte) error {
		for _, it := range b {
			if syncParkPoison(it) {
				if _, again := healed.LoadOrStore(string(it), true); !again {
					return vq.Permanent(errors.New("poison"))
				}
			}
		}
		if rand.IntN(20) == 0 {
			return errors.New("flaky")
		}
		line := []byte{'D'}
		for _, it := range b {
			line = append(line, ' ')
			line = append(line, it...)
		}
		emit(append(line, '\n'))
		return nil
	}
	q, err := vq.New(syncParkConfig(spec.Dir, send))
	if err != nil {
		fmt.Fprintln(os.Stderr, "New:", err)
		os.Exit(2)
	}
	go func() { // GOMAXPROCS moves under the producers
		for i := 0; ; i++ {
			runtime.GOMAXPROCS(1 + i%4)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	go func() {
		for q.Stats().DeadLettered == 0 {
			time.Sleep(time.Millisecond)
		}
		fmt.Println(syncParkReady)
	}()
	go func() { // an operator requeues the dead letters now and then
		for {
			time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
			if _, err := q.RequeueDeadLetters(); err != nil {
				fmt.Fprintln(os.Stderr, "RequeueDeadLetters:", err)
			}
		}
	}()
	base := uint64(spec.Run) << 32
	for g := range 8 { // keyed producers, each owning 2 keys
		go func() {
			seq := make([]uint64, 2)
			for i := 0; ; i++ {
				k := uint64(g*2 + i%2)
				s := base | seq[i%2]
				if err := q.EnqueueKey(k, fmt.Appendf(nil, "k/%d/%d", k, s)); err == nil {
					seq[i%2]++
					emit(fmt.Appendf(nil, "K %d %d\n", k, s))
				}
			}
		}()
	}
	go func() { // plain load
		for {
			_ = q.Enqueue([]byte("e/0"))
		}
	}()
	time.Sleep(time.Hour)
	os.Exit(0)
}

type syncParkHistory struct {
	accepted   map[[2]uint64]bool
	delivered  map[string]bool
	firstOrder map[uint64][]uint64 // per key, seqs in order of first delivery
}

func (h *syncParkHistory) deliver(item string) {
	if h.delivered[item] {
		return
	}
	h.delivered[item] = true
	if rest, ok := strings.CutPrefix(item, "k/"); ok {
		ks, ss, _ := strings.Cut(rest, "/")
		k, _ := strconv.ParseUint(ks, 10, 64)
		s, _ := strconv.ParseUint(ss, 10, 64)
		h.firstOrder[k] = append(h.firstOrder[k], s)
	}
}

func (h *syncParkHistory) readLog(t *testing.T, path string) {
	for _, fs := range crashtest.LogFields(t, path) { // a line cut by the kill is dropped
		switch fs[0] {
		case "K":
			if len(fs) == 3 {
				k, _ := strconv.ParseUint(fs[1], 10, 64)
				s, _ := strconv.ParseUint(fs[2], 10, 64)
				h.accepted[[2]uint64{k, s}] = true
			}
		case "D":
			for _, it := range fs[1:] {
				h.deliver(it)
			}
		}
	}
}

// TestAttackCrashSyncParkKeys: in Sync mode with ParkKeys, every keyed
// item whose EnqueueKey returned nil survives SIGKILL wherever it was:
// in a shard, in Send, moved to a parked dead letter, or being released
// from one (the dead letters are requeued while producers run). Two
// kills on one directory, then a last queue requeues what is left: every
// accepted item is delivered, and no key's item is delivered for the first
// time after a later item of its key.
func TestAttackCrashSyncParkKeys(t *testing.T) {
	if js := os.Getenv(syncParkChildEnv); js != "" {
		syncParkChild(js)
	}
	dir, logs := t.TempDir(), t.TempDir()
	h := &syncParkHistory{accepted: map[[2]uint64]bool{}, delivered: map[string]bool{}, firstOrder: map[uint64][]uint64{}}
	for run := range 2 {
		spec := syncParkSpec{Dir: dir, Log: filepath.Join(logs, fmt.Sprint(run)), Run: run + 1}
		js, _ := json.Marshal(spec)
		// The kill's moment: any, once a key has parked (so that a slow
		// start on a busy machine still leaves something at stake).
		killAt := make(chan struct{})
		var ready sync.Once
		c := crashtest.Start(t, "TestAttackCrashSyncParkKeys", func(line string) {
			if line == syncParkReady {
				ready.Do(func() {
					time.AfterFunc(time.Duration(rand.IntN(600))*time.Millisecond, func() { close(killAt) })
				})
			}
		}, syncParkChildEnv+"="+string(js))
		c.KillWhen(killAt)
		if s := c.Crashed("New:", "RequeueDeadLetters:"); s != "" {
			t.Fatalf("child run %d: %s", run, s)
		}
		h.readLog(t, spec.Log)
		t.Logf("run %d: %d keyed accepted so far, %d delivered", run, len(h.accepted), len(h.delivered))
	}
	poisoned := 0
	for ks := range h.accepted {
		if syncParkPoison(fmt.Appendf(nil, "k/%d/%d", ks[0], ks[1])) {
			poisoned++
		}
	}
	if poisoned == 0 {
		t.Fatalf("nothing at stake: of %d keyed items accepted, none was poisoned (no key ever parked)", len(h.accepted))
	}

	// The last queue: the sink takes everything; requeue until no dead
	// letter is left.
	var mu sync.Mutex
	q, err := vq.New(syncParkConfig(dir, func(_ context.Context, b [][]byte) error {
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			h.deliver(string(it))
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		requeueThenFlush(t, q)
		ds, err := q.DeadLetters()
		if err != nil {
			t.Fatal(err)
		}
		st := q.Stats()
		if len(ds) == 0 && !st.Backlog.Replaying && st.Buffered == 0 && st.ParkedKeys == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters left: %d, stats %+v", len(ds), st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for ks := range h.accepted {
		if !h.delivered[fmt.Sprintf("k/%d/%d", ks[0], ks[1])] {
			if lost < 5 {
				t.Errorf("keyed item k/%d/%d (run %d) accepted and never delivered", ks[0], ks[1]&0xffffffff, ks[1]>>32)
			}
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d accepted keyed items lost (%d poisoned)", lost, len(h.accepted), poisoned)
	}
	for k, order := range h.firstOrder {
		for i := 1; i < len(order); i++ {
			if order[i] < order[i-1] {
				t.Errorf("key %d: seq %d (run %d) first delivered after seq %d (run %d)", k, order[i]&0xffffffff, order[i]>>32, order[i-1]&0xffffffff, order[i-1]>>32)
				break
			}
		}
	}
	t.Logf("%d keyed accepted (%d poisoned), %d items delivered", len(h.accepted), poisoned, len(h.delivered))
}
