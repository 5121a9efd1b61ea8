package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// keyedItem is item i of a keyed test log; keyOf(i) is its key.
func keyedItem(i int) []byte { return fmt.Appendf(nil, "keyed-%05d %s", i, payloadFor(i)) }
func keyOf(i int) uint64     { return uint64(i%7) * 0x9E3779B97F4A7C15 }

// replayedItem is one item as ReplayRecords handed it out.
type replayedItem struct {
	id    uint64
	item  string
	key   uint64
	keyed bool
}

func replayItems(t *testing.T, l *Log) []replayedItem {
	t.Helper()
	var out []replayedItem
	require.NoError(t, l.ReplayRecords(func(r *ReplayedRecord) error {
		i := 0
		err := ForEachItem(r.Payload, func(item []byte) error {
			it := replayedItem{id: r.ID, item: string(item)}
			if r.Keys != nil {
				require.Less(t, i, len(r.Keys), "record %d: more items than keys", r.ID)
				it.key, it.keyed = r.Keys[i], true
			}
			out = append(out, it)
			i++
			return nil
		})
		if r.Keys != nil {
			require.Equal(t, len(r.Keys), i, "record %d: keys and items", r.ID)
		}
		return err
	}))
	return out
}

// TestKeyedRecords: keyed items (AppendKeyedItemsAt from concurrent
// callers, and WriteKeyed) share records only with keyed items, and come
// back with their keys from ReplayRecords, in the clear and encrypted; the
// unkeyed items written meanwhile come back without keys; Replay,
// ReadRange and ReadSegment see the items alone, ReadSegment with keys.
func TestKeyedRecords(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			dir := t.TempDir()
			opts := smallOpts()
			if enc {
				opts.EncryptionKey = testKey(3)
			}
			l := openT(t, dir, opts)
			const n = 400
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += 4 {
						var err error
						if i%3 == 0 {
							_, _, err = l.AppendItemsAt([][]byte{payloadFor(i)})
						} else {
							var index int
							var id uint64
							id, index, err = l.AppendKeyedItemsAt([][]byte{keyedItem(i)}, []uint64{keyOf(i)})
							if err == nil && (index < 0 || id == 0) {
								err = fmt.Errorf("id %d index %d", id, index)
							}
						}
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			// WriteKeyed: a payload built by the caller.
			var frames []byte
			var keys []uint64
			for i := n; i < n+5; i++ {
				frames = AppendFrame(frames, keyedItem(i))
				keys = append(keys, keyOf(i))
			}
			wid, err := l.WriteKeyed(AppendKeys(frames, keys))
			require.NoError(t, err)
			// A trailer that does not match the frames is refused.
			_, err = l.WriteKeyed(AppendKeys(frames, keys[:4]))
			require.ErrorIs(t, err, ErrCorrupt)
			require.NoError(t, l.Close())

			l = openT(t, dir, opts)
			got := replayItems(t, l)
			require.Len(t, got, n+5)
			seen := map[string]bool{}
			for _, it := range got {
				seen[it.item] = true
				if strings.HasPrefix(it.item, "keyed-") {
					var i int
					_, err := fmt.Sscanf(it.item, "keyed-%05d", &i)
					require.NoError(t, err)
					require.True(t, it.keyed, "item %d came back without a key", i)
					require.Equal(t, keyOf(i), it.key, "key of item %d", i)
				} else {
					require.False(t, it.keyed, "unkeyed item %q came back keyed", it.item)
				}
			}
			for i := 0; i < n+5; i++ {
				want := string(payloadFor(i))
				if i%3 != 0 || i >= n {
					want = string(keyedItem(i))
				}
				require.True(t, seen[want], "item %d not replayed", i)
			}
			// Replay and ReadRange: items only, framed as ever.
			var plain []string
			require.NoError(t, l.Replay(func(_ uint64, p []byte, _ []ItemRange) error {
				return ForEachItem(p, func(it []byte) error { plain = append(plain, string(it)); return nil })
			}))
			require.Len(t, plain, n+5)
			for i, it := range got {
				require.Equal(t, it.item, plain[i])
			}
			require.NoError(t, l.ReadRange(wid, wid, func(_ uint64, p []byte) error {
				require.Equal(t, frames, p)
				return nil
			}))
			require.NoError(t, l.Close())

			// ReadSegment (vinewal dump) shows the keys.
			var keyedRecs, keyedItems int
			segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
			for _, seg := range segs {
				_, err := ReadSegment(seg, func(r Record) error {
					if r.Keys != nil {
						keyedRecs++
						k := 0
						require.NoError(t, ForEachItem(r.Payload, func(it []byte) error {
							var i int
							_, err := fmt.Sscanf(string(it), "keyed-%05d", &i)
							require.NoError(t, err)
							require.Equal(t, keyOf(i), r.Keys[k])
							k++
							return nil
						}))
						keyedItems += k
					}
					return nil
				}, keysOf(opts)...)
				require.NoError(t, err)
			}
			require.Positive(t, keyedRecs)
			require.Equal(t, n-(n+2)/3+5, keyedItems)
		})
	}
}

// TestKeyedRecordsTooLarge: the keys count against MaxRecord.
func TestKeyedRecordsTooLarge(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.MaxRecord = 4096
	l := openT(t, dir, opts)
	defer l.Close()
	item := bytes.Repeat([]byte{'x'}, 4096-2-8-keyedTrailer) // a 2-byte frame header
	require.Equal(t, 4096, FrameSize(len(item))+8+keyedTrailer)
	_, _, err := l.AppendItemsAt([][]byte{item})
	require.NoError(t, err)
	_, _, err = l.AppendKeyedItemsAt([][]byte{item}, []uint64{1})
	require.NoError(t, err)
	_, _, err = l.AppendKeyedItemsAt([][]byte{append(item, 'y')}, []uint64{1})
	require.ErrorIs(t, err, ErrTooLarge)
	_, _, err = l.AppendKeyedItemsAt([][]byte{item}, nil)
	require.Error(t, err)
}

// corpusSegment reads a segment kept in testdata/fuzz/FuzzOpen: written by
// releases before keyed records, it is the old format as it was.
func corpusSegment(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzOpen", name))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 2)
	q := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
	s, err := strconv.Unquote(q)
	require.NoError(t, err)
	return []byte(s)
}

// TestOldRecordsReplayUnkeyed: segments written before keyed records (a
// version 1 segment, and version 2 ones under two codecs, from the fuzz
// corpus) replay as before, every record without keys.
func TestOldRecordsReplayUnkeyed(t *testing.T) {
	for _, name := range []string{"codec-lz4", "codec-none", "segment-a"} {
		t.Run(name, func(t *testing.T) {
			seg := corpusSegment(t, name)
			require.Equal(t, "VINE", string(seg[:4]))
			dir := t.TempDir()
			size := align8(int64(len(seg)))
			full := make([]byte, max(size, int64(binary.LittleEndian.Uint64(seg[16:24]))))
			copy(full, seg)
			require.NoError(t, os.WriteFile(filepath.Join(dir, segmentName(1)), full, 0o600))
			l := openT(t, dir, smallOpts())
			defer func() { l.Close() }()
			require.Zero(t, l.Stats().Corrupt)
			records := 0
			require.NoError(t, l.ReplayRecords(func(r *ReplayedRecord) error {
				require.Nil(t, r.Keys, "record %d came back keyed", r.ID)
				records++
				return nil
			}))
			require.Positive(t, records)
			if name != "segment-a" { // segment-a's payloads are not framed
				require.Equal(t, 4, records)
				l.Close()
				l = openT(t, dir, smallOpts())
				got := replayItems(t, l)
				require.Len(t, got, 12)
				for k, it := range got {
					require.Equal(t, string(payloadFor(k)), it.item)
					require.False(t, it.keyed)
				}
			}
		})
	}
}

// TestSplitKeyedRefusesBadTrailers: a keyed payload whose trailer lies is
// ErrCorrupt, never a panic or a wrong split.
func TestSplitKeyedRefusesBadTrailers(t *testing.T) {
	frames := AppendFrame(AppendFrame(nil, []byte("a")), []byte("bc"))
	good := AppendKeys(frames, []uint64{1, 2})
	items, keys, n, err := splitKeyed(good)
	require.NoError(t, err)
	require.Equal(t, frames, items)
	require.Equal(t, 2, n)
	require.Equal(t, []uint64{1, 2}, appendKeysOf(nil, keys))
	for name, p := range map[string][]byte{
		"empty":      nil,
		"short":      {1, 0},
		"too many":   binary.LittleEndian.AppendUint32(bytes.Clone(frames), 1<<30),
		"one key":    AppendKeys(frames, []uint64{1}),
		"three keys": AppendKeys(frames, []uint64{1, 2, 3}),
		"bad frame":  AppendKeys([]byte{0x80}, nil),
	} {
		_, _, _, err := splitKeyed(p)
		require.ErrorIs(t, err, ErrCorrupt, name)
	}
}

func keysOf(o Options) [][]byte {
	if o.EncryptionKey == nil {
		return nil
	}
	return [][]byte{o.EncryptionKey}
}
