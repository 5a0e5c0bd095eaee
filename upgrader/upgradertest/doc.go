// Package upgradertest helps people who write their own upgraders and test
// code that uses the engine.
//
// [Run] is the conformance suite a custom [upgrader.Upgrader] passes: it
// honours its context, reports phases in order, stops before flashing when a
// cancel wins, and classifies its errors. [Fake] is a scriptable Upgrader
// (and Verifier) for tests of the engine and of hosts; [Reporter] is a
// recording upgrader.Reporter for calling an Upgrader without an engine.
package upgradertest
