package wal

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The item-range crash test: a child appends items from several goroutines
// through the group commit (so records are shared by many calls), then
// acknowledges random ranges of the records' items — whole calls, parts of
// calls, ranges across calls — and prints each range before acking it:
//
//	A <id> <index> <item>   item <item> is item <index> of record <id>
//	K <id> <off> <n>        AckRange(id, off, n) returned nil
//	W                       every range acked is in the ack log file
//
// Before W the child reads its ack log back until every range it acked is
// there (the ack log is written within a millisecond, without a sync): no
// sleep, and the kill can only forget acks the test does not count on. The
// parent SIGKILLs it at W; the next Open must replay exactly the items not
// acknowledged, count them in Stats.ItemsPending before Replay, and name
// the acknowledged items of each replayed record as done.
const rangeChildEnv = "VINEWAL_RANGE_CHILD"

func rangeChildMain() int {
	dir := os.Getenv(rangeChildEnv)
	seed, _ := strconv.ParseUint(os.Getenv("VINEWAL_RANGE_SEED"), 10, 64)
	out := &lineWriter{w: os.Stdout}
	// No durable ack flush in the child's life: what the next Open finds
	// is what the page cache held at the kill.
	l, err := Open(dir, Options{SegmentSize: 64 << 10, AckInterval: time.Hour})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	type call struct {
		id       uint64
		index, n int
	}
	var (
		mu    sync.Mutex
		calls []call
		wg    sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range 40 {
				items := make([][]byte, 1+(g+seq)%4)
				for i := range items {
					items[i] = fmt.Appendf(nil, "%d/%d/%d", g, seq, i)
				}
				id, index, err := l.AppendItemsAt(items)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(2)
				}
				for i, item := range items {
					out.printf("A %d %d %s\n", id, index+i, item)
				}
				mu.Lock()
				calls = append(calls, call{id, index, len(items)})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rng := rand.New(rand.NewPCG(seed, 7))
	rng.Shuffle(len(calls), func(i, j int) { calls[i], calls[j] = calls[j], calls[i] })
	type ack struct {
		id     uint64
		off, n int
	}
	var acks []ack
	for _, c := range calls {
		var a ack
		switch rng.IntN(4) {
		case 0: // not delivered
			continue
		case 1: // a part of the call
			off := rng.IntN(c.n)
			a = ack{c.id, c.index + off, 1 + rng.IntN(c.n-off)}
		case 2: // from the call on, across the calls after it in the record
			a = ack{c.id, c.index, c.n + rng.IntN(3)}
		default: // the call
			a = ack{c.id, c.index, c.n}
		}
		if err := l.AckRange(a.id, a.off, a.n); err != nil {
			continue // past the record's end (case 2 on its last call): refused
		}
		out.printf("K %d %d %d\n", a.id, a.off, a.n)
		acks = append(acks, a)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, ackFileName))
		if err != nil {
			fmt.Fprintln(os.Stderr, "read ack log:", err)
			return 2
		}
		st, err := parseAckLog(b)
		if err != nil {
			fmt.Fprintln(os.Stderr, "parse ack log:", err)
			return 2
		}
		all := true
		for _, a := range acks {
			if st.acked.contains(a.id) {
				continue
			}
			set := st.items.of(a.id)
			if set == nil || set.count(uint64(a.off), uint64(a.off+a.n-1)) != uint64(a.n) {
				all = false
				break
			}
		}
		if all {
			break
		}
		runtime.Gosched() // poll: the ack writer has the file within a millisecond
	}
	out.printf("W 0\n")
	select {} // until killed
}

func TestCrashReplaysExactlyTheItemsNotAcknowledged(t *testing.T) {
	for run := range 3 {
		dir := t.TempDir()
		seed := uint64(time.Now().UnixNano()) + uint64(run)
		cmd, lines, stderr := startChild(t, []string{rangeChildEnv + "=" + dir, fmt.Sprintf("VINEWAL_RANGE_SEED=%d", seed)})
		type key struct {
			id    uint64
			index int
		}
		items := map[key]string{}
		done := map[key]bool{}
		deadline := time.After(60 * time.Second)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("child ended before W: %v; stderr:\n%s", cmd.Wait(), stderr.String())
				}
				f := strings.Fields(line)
				if len(f) == 2 && f[0] == "W" {
					break read
				}
				require.Len(t, f, 4, line)
				id, err1 := strconv.ParseUint(f[1], 10, 64)
				a, err2 := strconv.Atoi(f[2])
				require.NoError(t, err1, line)
				require.NoError(t, err2, line)
				switch f[0] {
				case "A":
					items[key{id, a}] = f[3]
				case "K":
					n, err := strconv.Atoi(f[3])
					require.NoError(t, err, line)
					for i := a; i < a+n; i++ {
						done[key{id, i}] = true
					}
				default:
					t.Fatalf("bad line %q", line)
				}
			case <-deadline:
				_ = cmd.Process.Kill()
				t.Fatalf("no W in 60 s; stderr:\n%s", stderr.String())
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for range lines {
		}
		require.True(t, isKilled(cmd.Wait()))

		want := map[key]string{}
		for k, item := range items {
			if !done[k] {
				want[k] = item
			}
		}
		l := openT(t, dir, smallOpts())
		st := l.Stats()
		require.Zero(t, st.Corrupt)
		require.Zero(t, st.Uncounted)
		require.Equal(t, uint64(len(want)), st.ItemsPending, "items pending at Open")
		got := map[key]string{}
		require.NoError(t, l.Replay(func(id uint64, p []byte, d []ItemRange) error {
			i := 0
			return ForEachItem(p, func(item []byte) error {
				defer func() { i++ }()
				k := key{id, i}
				isDone := false
				for _, r := range d {
					isDone = isDone || (i >= r.Off && i < r.Off+r.N)
				}
				require.Equal(t, done[k], isDone, "record %d item %d: done as acked", id, i)
				if !isDone {
					got[k] = string(item)
				}
				return nil
			})
		}))
		require.Equal(t, want, got, "run %d: replayed exactly the items not acknowledged", run)
		t.Logf("run %d: %d items, %d acknowledged, %d replayed", run, len(items), len(items)-len(want), len(got))
		for k := range got {
			require.NoError(t, l.AckRange(k.id, k.index, 1))
		}
		require.Zero(t, l.Stats().ItemsPending)
		require.NoError(t, l.Close())
	}
}
