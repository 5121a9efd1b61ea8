package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vineroute/vinequeue/wal"
)

// makeDLQ writes n dead letters of two items each ("dl<i>-a", "dl<i>-b")
// and one pending main-log record.
func makeDLQ(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096})
	require.NoError(t, err)
	_, err = l.Append(wal.AppendFrame(nil, []byte("pending")))
	require.NoError(t, err)
	for i := 1; i <= n; i++ {
		p := wal.AppendFrame(nil, fmt.Appendf(nil, "dl%d-a", i))
		p = wal.AppendFrame(p, fmt.Appendf(nil, "dl%d-b", i))
		_, err := l.DeadLetter(p, wal.DeadMeta{Time: time.Unix(1700000000, 0), Reason: fmt.Sprintf("kafka: broker down\n(attempt %d)", i), Records: []uint64{1}, Attempts: 5})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	return dir
}

// pendingItems opens dir and returns the items Replay hands out.
func pendingItems(t *testing.T, dir string) []string {
	t.Helper()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096})
	require.NoError(t, err)
	defer l.Close()
	var got []string
	require.NoError(t, l.Replay(func(_ uint64, p []byte, _ []wal.ItemRange) error {
		return wal.ForEachItem(p, func(it []byte) error {
			got = append(got, string(it))
			return nil
		})
	}))
	return got
}

func TestDLQListAndDump(t *testing.T) {
	dir := makeDLQ(t, 3)
	code, out, errOut := runT(t, "dlq", "list", dir)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "ID  TIME")
	assert.Contains(t, out, "2023-11-14T22:13:20Z  2      12     5         kafka: broker down (attempt 2)")
	assert.Contains(t, out, "3 dead letters")

	code, out, _ = runT(t, "dlq", "list", "-json", dir)
	require.Equal(t, 0, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	var e dlqEntry
	require.NoError(t, json.Unmarshal([]byte(lines[2]), &e))
	assert.Equal(t, uint64(3), e.ID)
	assert.Equal(t, 2, e.Items)
	assert.Equal(t, []uint64{1}, e.Records)
	assert.Equal(t, "kafka: broker down\n(attempt 3)", e.Reason)

	code, out, _ = runT(t, "dlq", "dump", dir, "2")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "dead letter 2: 2023-11-14T22:13:20Z, 2 items, 12 bytes, 5 attempts, records [1], reason \"kafka: broker down\\n(attempt 2)\"")
	assert.Contains(t, out, "  item 0: dl2-a\n  item 1: dl2-b\n")

	code, out, errOut = runT(t, "dlq", "dump", "-json", dir, "1", "9")
	assert.Equal(t, 1, code, "id 9 is not a dead letter")
	assert.Contains(t, errOut, "no such dead letter: [9]")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	var it dlqItem
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &it))
	require.NotNil(t, it.Text)
	assert.Equal(t, "dl1-b", *it.Text)

	// An empty WAL directory has no dead letters.
	code, out, _ = runT(t, "dlq", "list", t.TempDir())
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "0 dead letters")
}

func TestDLQListDamaged(t *testing.T) {
	dir := makeDLQ(t, 2)
	path := filepath.Join(dir, "dlq", "00000000000000000002.wal")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)-9] ^= 0xFF
	require.NoError(t, os.WriteFile(path, b, 0o600))
	code, out, _ := runT(t, "dlq", "list", dir)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "DAMAGED")
	assert.Contains(t, out, "1 damaged")
	code, _, errOut := runT(t, "dlq", "dump", dir, "2")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "corrupt")
}

func TestDLQRequeueAndPurge(t *testing.T) {
	dir := makeDLQ(t, 4)
	code, out, errOut := runT(t, "dlq", "requeue", dir, "2", "3")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "requeued 2 dead letters into the log; the next start replays them\n", out)
	assert.ElementsMatch(t, []string{"pending", "dl2-a", "dl2-b", "dl3-a", "dl3-b"}, pendingItems(t, dir))

	code, _, errOut = runT(t, "dlq", "requeue", dir, "3")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no such dead letter: [3]")

	code, out, errOut = runT(t, "dlq", "purge", dir, "1", "7")
	assert.Equal(t, 1, code)
	assert.Equal(t, "purged 1 dead letters\n", out)
	assert.Contains(t, errOut, "[7]")
	code, out, _ = runT(t, "dlq", "list", dir)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "1 dead letters")

	code, _, _ = runT(t, "dlq", "purge", dir)
	assert.Equal(t, 2, code, "purge without ids needs -all")
	code, out, _ = runT(t, "dlq", "purge", "-all", dir)
	require.Equal(t, 0, code)
	assert.Equal(t, "purged 1 dead letters\n", out)
	code, out, _ = runT(t, "dlq", "list", dir)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "0 dead letters")

	// requeue with no id takes them all.
	dir = makeDLQ(t, 2)
	code, out, _ = runT(t, "dlq", "requeue", dir)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "requeued 2 ")
	assert.ElementsMatch(t, []string{"pending", "dl1-a", "dl1-b", "dl2-a", "dl2-b"}, pendingItems(t, dir))
}

func TestDLQUsageAndLocked(t *testing.T) {
	dir := makeDLQ(t, 1)
	for _, args := range [][]string{
		{"dlq"}, {"dlq", "frob", dir}, {"dlq", "list"}, {"dlq", "list", dir, "1"},
		{"dlq", "dump", dir}, {"dlq", "dump", dir, "x"}, {"dlq", "purge", "-all", dir, "1"},
		{"dlq", "requeue", "-all", dir}, {"dlq", "list", filepath.Join(dir, "missing")},
	} {
		code, _, errOut := runT(t, args...)
		assert.Equal(t, 2, code, "%v: %s", args, errOut)
	}
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096})
	require.NoError(t, err)
	defer l.Close()
	code, _, errOut := runT(t, "dlq", "purge", "-all", dir)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "in use")
	code, _, _ = runT(t, "dlq", "list", dir)
	assert.Equal(t, 0, code, "list only reads: fine on a directory in use")
}

// TestDLQListShowsKeys: a keyed dead letter (a queue with ParkKeys) lists
// its keys, a parked one is marked, and dump gives each item's key.
func TestDLQListShowsKeys(t *testing.T) {
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096})
	require.NoError(t, err)
	p := wal.AppendFrame(wal.AppendFrame(nil, []byte("a")), []byte("b"))
	_, err = l.DeadLetter(p, wal.DeadMeta{Reason: "poison", Keys: []uint64{9, 4}})
	require.NoError(t, err)
	_, err = l.DeadLetter(p, wal.DeadMeta{Reason: "parked", Keys: []uint64{9, 9}, Parked: true})
	require.NoError(t, err)
	require.NoError(t, l.Close())

	code, out, errOut := runT(t, "dlq", "list", dir)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "[holds keys [4 9]] poison")
	assert.Contains(t, out, "[parked, behind an earlier dead letter of keys [9]] parked")
	code, out, _ = runT(t, "dlq", "list", "-json", dir)
	require.Equal(t, 0, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	var e dlqEntry
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &e))
	assert.Equal(t, []uint64{9}, e.Keys)
	assert.True(t, e.Parked)
	code, out, _ = runT(t, "dlq", "dump", dir, "1")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "  item 0 (key 9): a\n  item 1 (key 4): b\n")
}
