// Package testenv is the one place that names and reads the environment
// variables the tests, the test registry and the benchmarks obey (README,
// Development), and decides whether a missing prerequisite skips a test or
// fails it.
package testenv
