package engine

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestAckOrderMerges: one-item spans of a few records, shuffled as Sync
// mode's calls deliver them, come out as one span per run of items, in
// record order; a gap in a record's items keeps two spans, and spans of
// items not on disk (id 0) stay, each as it was, first. Records far apart
// (sorted rather than marked) come out the same way.
func TestAckOrderMerges(t *testing.T) {
	for _, ids := range [][]uint64{{7, 3, 9}, {7, 3, 9 + ackBitRecords}} {
		var spans []span
		for _, id := range ids {
			for off := range 100 {
				if id == ids[2] && off == 50 {
					continue // a gap: item 50 of this record is in another batch
				}
				spans = append(spans, span{id: id, off: off, n: 1})
			}
		}
		spans = append(spans, span{n: 1}, span{n: 2})
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
		got := ackOrder(slices.Clone(spans), new(ackBuffers))
		want := []span{{n: 1}, {n: 2}, {id: 3, n: 100}, {id: 7, n: 100}, {id: ids[2], n: 50}, {id: ids[2], off: 51, n: 49}}
		if !slices.Equal(got, want) && !slices.Equal(got, append([]span{{n: 2}, {n: 1}}, want[2:]...)) {
			t.Fatalf("ackOrder = %v, want %v", got, want)
		}
		// Already in order and merged: unchanged.
		if got := ackOrder(slices.Clone(want[2:]), new(ackBuffers)); !slices.Equal(got, want[2:]) {
			t.Fatalf("ackOrder of merged spans = %v", got)
		}
	}
}

// TestAckOrderAgreesWithSort: random spans of various lengths, with a
// reused buffer, come out as the sort makes them.
func TestAckOrderAgreesWithSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	buf := new(ackBuffers)
	for range 200 {
		var spans []span
		base := uint64(1 + r.IntN(1000))
		for id := base; id < base+uint64(1+r.IntN(5)); id++ {
			off := r.IntN(3)
			for off < 300 {
				n := 1 + r.IntN(20)
				if r.IntN(4) > 0 {
					spans = append(spans, span{id: id, off: off, n: n})
				}
				off += n
			}
		}
		r.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
		want := ackSort(slices.Clone(spans))
		if got := ackOrder(slices.Clone(spans), buf); !slices.Equal(got, want) {
			t.Fatalf("ackOrder(%v) = %v, the sort makes %v", spans, got, want)
		}
	}
}

// TestAckOrdered: spans in record and item order are left as they are;
// a span before the end of the one it follows is not in order.
func TestAckOrdered(t *testing.T) {
	for _, c := range []struct {
		spans []span
		want  bool
	}{
		{nil, true},
		{[]span{{id: 3, off: 5, n: 2}}, true},
		{[]span{{n: 1}, {id: 3, n: 2}, {id: 3, off: 2, n: 1}, {id: 4, n: 9}}, true},
		{[]span{{id: 3, off: 2, n: 1}, {id: 3, n: 2}}, false},
		{[]span{{id: 3, n: 2}, {id: 3, off: 1, n: 1}}, false},
		{[]span{{id: 4, n: 1}, {id: 3, off: 9, n: 1}}, false},
		{[]span{{id: 4, n: 1}, {n: 1}}, false},
	} {
		if got := ackOrdered(c.spans); got != c.want {
			t.Errorf("ackOrdered(%v) = %v, want %v", c.spans, got, c.want)
		}
	}
}

// TestTakeSpansSplitsAndReusesTheArray: takeSpans moves the spans of the
// first n items, splitting the one that straddles item n; once every span
// is taken the source starts again at the front of what it had, so that
// appends after it reuse that array instead of growing a new one.
func TestTakeSpansSplitsAndReusesTheArray(t *testing.T) {
	src := make([]span, 0, 8)
	src = append(src, span{1, 0, 3}, span{2, 5, 4}, span{4, 0, 2})
	got := takeSpans(nil, &src, 5) // record 1's three items, two of record 2's
	if want := []span{{1, 0, 3}, {2, 5, 2}}; !slices.Equal(got, want) {
		t.Fatalf("took %v, want %v", got, want)
	}
	if want := []span{{2, 7, 2}, {4, 0, 2}}; !slices.Equal(src, want) {
		t.Fatalf("left %v, want %v", src, want)
	}
	front, room := &src[0], cap(src)
	got = takeSpans(got[:0], &src, 4)
	if want := []span{{2, 7, 2}, {4, 0, 2}}; !slices.Equal(got, want) {
		t.Fatalf("took %v, want %v", got, want)
	}
	if len(src) != 0 || cap(src) != room || &src[:1][0] != front {
		t.Fatalf("all taken: len %d cap %d, same front %v; want 0, %d, true", len(src), cap(src), &src[:1][0] == front, room)
	}
}
