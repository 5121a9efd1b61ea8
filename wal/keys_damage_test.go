package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKeyedTrailerDamage: a byte of one keyed record's key trailer is
// flipped on disk, in a salted segment in the clear and in an encrypted
// one. Open counts exactly that record (Stats.Corrupt 1), repairs the
// segment, and every other record comes back with each item's own key,
// from ReplayRecords and from ReadSegment (vinewal dump) of the repaired
// file; the damaged record's items come back under no key.
func TestKeyedTrailerDamage(t *testing.T) {
	const recs, per = 12, 3
	item := func(r, k int) string { return fmt.Sprintf("rec%02d-item%d", r, k) }
	key := func(r, k int) uint64 { return uint64(1000*r + k + 1) }
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			dir := t.TempDir()
			opts := smallOpts()
			opts.Compression = NoCompression
			if enc {
				opts.EncryptionKey = testKey(5)
			}
			l := openT(t, dir, opts)
			ids := map[uint64]int{}
			for r := range recs {
				var frames []byte
				var keys []uint64
				for k := range per {
					frames = AppendFrame(frames, []byte(item(r, k)))
					keys = append(keys, key(r, k))
				}
				id, err := l.WriteKeyed(AppendKeys(frames, keys))
				require.NoError(t, err)
				ids[id] = r
			}
			require.NoError(t, l.Close())

			segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
			require.Len(t, segs, 1)
			const victim = 5
			var off int64 = -1
			_, err := ReadSegment(segs[0], func(rec Record) error {
				if ids[rec.ID] == victim {
					// The first byte of the last key: the payload ends
					// with it, 8 bytes, and the count (4), and an
					// encrypted payload with its 16-byte tag.
					end := rec.Offset + recordHeaderSize + int64(rec.StoredLen)
					if enc {
						end -= 16
					}
					off = end - keyedTrailer - 8
				}
				return nil
			}, keysOf(opts)...)
			require.NoError(t, err)
			require.Positive(t, off)
			data, err := os.ReadFile(segs[0])
			require.NoError(t, err)
			if !enc { // in the clear the byte is the key's own
				require.Equal(t, byte(key(victim, per-1)), data[off])
			}
			data[off] ^= 0x01
			require.NoError(t, os.WriteFile(segs[0], data, 0o600))

			l = openT(t, dir, opts)
			require.EqualValues(t, 1, l.Stats().Corrupt, "exactly the damaged record")
			got := replayItems(t, l)
			require.NoError(t, l.Close())
			require.Len(t, got, (recs-1)*per)
			for _, it := range got {
				var r, k int
				_, err := fmt.Sscanf(it.item, "rec%02d-item%d", &r, &k)
				require.NoError(t, err)
				require.NotEqual(t, victim, r, "an item of the damaged record came back")
				require.True(t, it.keyed)
				require.Equal(t, key(r, k), it.key, "key of %s", it.item)
			}
			n := 0
			_, err = ReadSegment(segs[0], func(rec Record) error {
				if rec.Gap {
					return nil
				}
				k := 0
				require.NoError(t, ForEachItem(rec.Payload, func(b []byte) error {
					require.Equal(t, item(ids[rec.ID], k), string(b))
					require.Equal(t, key(ids[rec.ID], k), rec.Keys[k])
					k++
					n++
					return nil
				}))
				return nil
			}, keysOf(opts)...)
			require.NoError(t, err, "the repaired segment reads without damage")
			require.Equal(t, (recs-1)*per, n)

			l = openT(t, dir, opts)
			require.Zero(t, l.Stats().Corrupt, "counted once")
			require.Len(t, replayItems(t, l), (recs-1)*per)
			require.NoError(t, l.Close())
		})
	}
}
