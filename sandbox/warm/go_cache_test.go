// Compiled and vetted once at image build time, so that the image ships a Go build cache holding the
// packages HumanEval-X's Go tests use. Each program starts from a fresh copy of it (see evalkit/languages.py).
package main

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"math"
	"math/rand"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestWarm(t *testing.T) {
	_ = bytes.NewBuffer(nil)
	_ = md5.Sum(nil)
	_ = fmt.Sprint(math.Abs(-1), rand.Intn(2), time.Now().IsZero())
	_ = regexp.MustCompile("a")
	_ = sort.IntsAreSorted(nil)
	_ = strconv.Itoa(1) + strings.Repeat("a", 2)
	assert.Equal(t, 1, 1)
}
