package nspawn

// For the external tests in this directory (package nspawn_test), which may
// import packages that import this one.
var (
	TestRootFS = testRootFS
	TestName   = testName
)
