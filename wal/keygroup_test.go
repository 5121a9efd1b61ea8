package wal

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKeyGroupOrdersKeyedRecords: with Options.KeyGroup, the calls that
// share a keyed record are laid out by the group of their first key, each
// call's items together, in order and where AppendKeyedItemsAt said, with
// their keys; and one goroutine's calls stay in its order.
func TestKeyGroupOrdersKeyedRecords(t *testing.T) {
	group := func(k uint64) uint8 { return uint8(k % 7) }
	dir := t.TempDir()
	l, err := Open(dir, Options{KeyGroup: group})
	require.NoError(t, err)
	type call struct {
		id          uint64
		index       int
		items       []string
		keys        []uint64
		goroutine   int
		seqInCaller int
	}
	const goroutines, calls = 48, 40
	var mu sync.Mutex
	var all []call
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var mine []call
			for j := range calls {
				n := 1 + (g+j)%3
				c := call{goroutine: g, seqInCaller: j}
				var items [][]byte
				for i := range n {
					s := fmt.Sprintf("g%d-c%d-i%d", g, j, i)
					c.items = append(c.items, s)
					c.keys = append(c.keys, uint64(g*1000+j*10+i))
					items = append(items, []byte(s))
				}
				id, index, err := l.AppendKeyedItemsAt(items, c.keys)
				if err != nil {
					t.Error(err)
					return
				}
				c.id, c.index = id, index
				mine = append(mine, c)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	require.NoError(t, l.Close())

	l, err = Open(dir, Options{KeyGroup: group})
	require.NoError(t, err)
	defer l.Close()
	type record struct {
		items []string
		keys  []uint64
	}
	records := map[uint64]record{}
	require.NoError(t, l.ReplayRecords(func(r *ReplayedRecord) error {
		var rec record
		if err := ForEachItem(r.Payload, func(item []byte) error {
			rec.items = append(rec.items, string(item))
			return nil
		}); err != nil {
			return err
		}
		rec.keys = append(rec.keys, r.Keys...)
		records[r.ID] = rec
		return nil
	}))

	starts := map[uint64][]call{} // each record's calls
	last := map[int]call{}
	for _, c := range all {
		rec, ok := records[c.id]
		require.True(t, ok, "record %d", c.id)
		require.LessOrEqual(t, c.index+len(c.items), len(rec.items))
		require.Equal(t, c.items, rec.items[c.index:c.index+len(c.items)], "call's items where its index says")
		require.Equal(t, c.keys, rec.keys[c.index:c.index+len(c.keys)], "with their keys")
		starts[c.id] = append(starts[c.id], c)
		if p, ok := last[c.goroutine]; ok && p.seqInCaller < c.seqInCaller {
			require.True(t, p.id < c.id || p.id == c.id && p.index < c.index, "a goroutine's calls in its order")
		}
		last[c.goroutine] = c
	}
	mixed := 0
	for id, cs := range starts {
		n := 0
		for _, c := range cs {
			n += len(c.items)
		}
		require.Len(t, records[id].items, n, "record %d holds its calls' items only", id)
		// In record order, the groups of the calls' first keys never fall.
		byIndex := make(map[int]call, len(cs))
		for _, c := range cs {
			byIndex[c.index] = c
		}
		groups := map[uint8]bool{}
		prev := -1
		for i := 0; i < n; {
			c, ok := byIndex[i]
			require.True(t, ok, "record %d: a call starts at item %d", id, i)
			g := int(group(c.keys[0]))
			require.GreaterOrEqual(t, g, prev, "record %d: call at item %d in group %d after group %d", id, i, g, prev)
			prev = g
			groups[uint8(g)] = true
			i += len(c.items)
		}
		if len(groups) > 1 {
			mixed++
		}
	}
	require.Positive(t, mixed, "no record held calls of two groups: nothing was ordered")
}
