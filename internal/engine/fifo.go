package engine

// fifo is a slice-backed queue for the collector's own lists (one goroutine;
// no locking). Popping a plain slice from the front (s = s[1:]) gives up the
// capacity before the head for good, so a list pushed and popped forever
// reallocates every few batches; fifo keeps reusing one backing array, which
// is what lets the steady state allocate nothing.
type fifo[E any] struct {
	buf  []E
	head int // buf[:head] have been popped and zeroed
}

func (f *fifo[E]) len() int { return len(f.buf) - f.head }

// peek returns the oldest element; the fifo must not be empty.
func (f *fifo[E]) peek() E { return f.buf[f.head] }

func (f *fifo[E]) push(e E) {
	if f.head > 0 && len(f.buf) == cap(f.buf) {
		// Full at the back with room at the front: slide down rather
		// than grow.
		n := copy(f.buf, f.buf[f.head:])
		clear(f.buf[n:])
		f.buf, f.head = f.buf[:n], 0
	}
	f.buf = append(f.buf, e)
}

// pop removes and returns the oldest element; the fifo must not be empty.
func (f *fifo[E]) pop() E {
	var zero E
	e := f.buf[f.head]
	f.buf[f.head] = zero // retention rule: no reference kept past the pop
	f.head++
	if f.head == len(f.buf) {
		f.buf, f.head = f.buf[:0], 0
	}
	return e
}

// items returns the elements, oldest first; it aliases the fifo.
func (f *fifo[E]) items() []E { return f.buf[f.head:] }

// reset empties the fifo, keeping its backing array.
func (f *fifo[E]) reset() {
	clear(f.buf)
	f.buf, f.head = f.buf[:0], 0
}
