package wal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The dead-letter crash tests re-execute the test binary as a child that
// requeues dead letters into the main log and is SIGKILLed on the way.
// VINEWAL_DLQ_CHILD names the directory; VINEWAL_DLQ_MODE is
//
//	hook     requeue everything offline; between the write into the main
//	         log and the purge, print "W" and wait to be killed
//	each     requeue the dead letters one at a time, printing "P <id>"
//	         after each, then "E" and wait to be killed
const deadChildEnv = "VINEWAL_DLQ_CHILD"

func deadChildMain() int {
	dir := os.Getenv(deadChildEnv)
	out := &lineWriter{w: os.Stdout}
	wait := func() int {
		time.Sleep(time.Hour) // the parent kills us
		return 3
	}
	switch os.Getenv("VINEWAL_DLQ_MODE") {
	case "hook":
		opts := Options{fault: func(step string) error {
			if step == "dlq-requeue-written" {
				out.printf("W\n")
				wait()
			}
			return nil
		}}
		if _, err := RequeueDeadLetters(dir, opts); err != nil {
			fmt.Fprintln(os.Stderr, "requeue:", err)
			return 2
		}
		return 0
	case "each":
		l, err := Open(dir, Options{SegmentSize: 64 << 10})
		if err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			return 2
		}
		dls, err := l.DeadLetters()
		if err != nil {
			fmt.Fprintln(os.Stderr, "list:", err)
			return 2
		}
		out.printf("S %d\n", len(dls))
		for _, d := range dls {
			_, err := l.RequeueDeadLetters([]uint64{d.ID}, func(_ DeadLetter, p []byte) error {
				return l.appendFramed(p)
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "requeue:", err)
				return 2
			}
			out.printf("P %d\n", d.ID)
		}
		out.printf("E\n")
		return wait()
	}
	fmt.Fprintln(os.Stderr, "unknown mode")
	return 2
}

// makeDeadLetters writes n dead letters of 3 items each into dir and
// returns every item.
func makeDeadLetters(t *testing.T, dir string, n int) map[string]bool {
	t.Helper()
	l := openT(t, dir, Options{SegmentSize: 64 << 10})
	all := map[string]bool{}
	for i := range n {
		p, items := deadBatch(strconv.Itoa(i), 3)
		_, err := l.DeadLetter(p, DeadMeta{Reason: "send failed"})
		require.NoError(t, err)
		for _, it := range items {
			all[it] = true
		}
	}
	require.NoError(t, l.Close())
	return all
}

// itemsOnDisk opens dir and returns how often each item is pending in the
// main log (Replay, not acknowledged) and in the dead-letter log.
func itemsOnDisk(t *testing.T, dir string) (replayed, dead map[string]int) {
	t.Helper()
	replayed, dead = map[string]int{}, map[string]int{}
	l := openT(t, dir, Options{SegmentSize: 64 << 10})
	defer l.Close()
	require.Zero(t, l.Stats().Corrupt, "a kill is not damage")
	require.Zero(t, l.Stats().DeadCorrupt, "a kill is not damage")
	for _, p := range replayAll(t, l) {
		for _, it := range splitItems(t, p) {
			replayed[it]++
		}
	}
	dls, err := l.DeadLetters()
	require.NoError(t, err)
	for _, d := range dls {
		_, p, err := l.ReadDeadLetter(d.ID)
		require.NoError(t, err)
		for _, it := range splitItems(t, p) {
			dead[it]++
		}
	}
	return replayed, dead
}

// A kill between requeue's write into the main log and its purge leaves
// every item in both: a duplicate, never a loss.
func TestDeadLetterRequeueCrashBetweenWriteAndPurgeDuplicates(t *testing.T) {
	dir := t.TempDir()
	all := makeDeadLetters(t, dir, 5)
	lines := runCrashChild(t, []string{deadChildEnv + "=" + dir, "VINEWAL_DLQ_MODE=hook"}, 1, rand.New(rand.NewPCG(3, 3)))
	require.Equal(t, []string{"W"}, lines)
	replayed, dead := itemsOnDisk(t, dir)
	for it := range all {
		assert.Equal(t, 1, replayed[it], "requeued item %q is replayed", it)
		assert.Equal(t, 1, dead[it], "item %q is still a dead letter", it)
	}
	assert.Len(t, replayed, len(all))
	assert.Len(t, dead, len(all))

	// Running it again writes them once more and purges them: no dead
	// letter is left, and each item is pending twice (the first write
	// and the second).
	n, err := RequeueDeadLetters(dir, Options{})
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	replayed, dead = itemsOnDisk(t, dir)
	assert.Empty(t, dead)
	for it := range all {
		assert.Equal(t, 2, replayed[it], it)
	}
}

// Kills at random moments of a requeue, one dead letter at a time: after
// each, every item is still somewhere — pending in the main log or a dead
// letter — and appears at most twice.
func TestDeadLetterRequeueCrashAtRandomLosesNothing(t *testing.T) {
	dir := t.TempDir()
	const n = 150
	all := makeDeadLetters(t, dir, n)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	left := n // dead letters left; the child prints one line per requeue and two more
	for round := 0; round < 6; round++ {
		lines := runCrashChild(t, []string{deadChildEnv + "=" + dir, "VINEWAL_DLQ_MODE=each"}, 1+rng.IntN(min(left, n/2)+1), rng)
		replayed, dead := itemsOnDisk(t, dir)
		t.Logf("round %d: killed after %d lines; %d items still dead letters", round, len(lines), len(dead))
		for it := range all {
			require.Positive(t, replayed[it]+dead[it], "round %d (%d lines): item %q lost", round, len(lines), it)
			require.LessOrEqual(t, dead[it], 1, it)
		}
		if left = len(dead) / 3; left == 0 {
			break
		}
	}
	// What a finished requeue leaves: no dead letters, every item pending.
	_, err := RequeueDeadLetters(dir, Options{})
	require.True(t, err == nil || errors.Is(err, ErrNotFound), "%v", err)
	replayed, dead := itemsOnDisk(t, dir)
	assert.Empty(t, dead)
	for it := range all {
		assert.Positive(t, replayed[it], it)
	}
}
