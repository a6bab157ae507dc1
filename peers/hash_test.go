package peers

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.%d.%d:5001", i/200, i%200+1)
	}
	return out
}

func owners(ms []string, key string, r int) []string {
	o := rank(ms, key)
	return o[:min(r, len(o))]
}

// A member joining or leaving moves about 1/N of the first owners, and
// only to or from that member.
func TestRendezvousStability(t *testing.T) {
	t.Parallel()
	const keys = 20000
	for _, n := range []int{4, 10, 50} {
		ms := members(n + 1)
		before, joined := ms[:n], ms
		movedJoin, movedLeave := 0, 0
		perMember := map[string]int{}
		for i := range keys {
			key := fmt.Sprintf("sha256:%064x", i)
			a, b := owners(before, key, 1)[0], owners(joined, key, 1)[0]
			perMember[a]++
			if a != b {
				movedJoin++
				assert.Equal(t, ms[n], b, "a key moves only to the new member")
			}
			left := append([]string{}, before[1:]...)
			if c := owners(left, key, 1)[0]; c != a {
				movedLeave++
				assert.Equal(t, before[0], a, "only the leaving member's keys move")
			}
		}
		want := float64(keys) / float64(n+1)
		assert.InDelta(t, want, float64(movedJoin), want*0.15, "n=%d: joins move ~1/(N+1)", n)
		assert.InDelta(t, float64(keys)/float64(n), float64(movedLeave), float64(keys)/float64(n)*0.15, "n=%d: a leave moves ~1/N", n)
		for m, c := range perMember {
			assert.InDelta(t, float64(keys)/float64(n), float64(c), float64(keys)/float64(n)*0.2, "n=%d: %s's share", n, m)
		}
	}
}

// Every node computes the same owners whatever order it lists the
// members in; the R owners are distinct.
func TestRendezvousAgreement(t *testing.T) {
	t.Parallel()
	ms := members(7)
	rev := make([]string, len(ms))
	for i, m := range ms {
		rev[len(ms)-1-i] = m
	}
	for i := range 100 {
		key := fmt.Sprintf("sha256:%064x", i)
		a, b := owners(ms, key, 2), owners(rev, key, 2)
		assert.Equal(t, a, b)
		assert.NotEqual(t, a[0], a[1])
	}
}
