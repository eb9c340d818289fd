import Foundation
import XCTest
@testable import StarEdgeBenchCore

/// Paths of the package, found from this file (works with `swift test` anywhere).
enum Paths {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let vectors = packageRoot.appendingPathComponent("TestVectors")

    static func json(_ name: String) throws -> JSONValue {
        try JSONValue.parse(try String(contentsOf: vectors.appendingPathComponent(name), encoding: .utf8))
    }

    static func text(_ name: String) throws -> String {
        try String(contentsOf: vectors.appendingPathComponent(name), encoding: .utf8)
    }
}

/// A runner factory over a fixed list of latencies on a virtual clock (the series repeats).
func replayFactory(_ latencies: [Double], loadMs: Double = 0) -> (ReplayRunnerFactory, VirtualClock) {
    let clock = VirtualClock()
    let factory = ReplayRunnerFactory(series: ReplaySeries(model: "m", backend: "coreml:all", loadMs: loadMs, latenciesMs: latencies), clock: clock)
    return (factory, clock)
}

/// The golden document: the example manifest's models replayed under the `ios` protocol
/// with every timestamp fixed, so that the bytes are reproducible.
func goldenDocument() throws -> BenchDocument {
    let manifest = try BundleManifest.parse(try Paths.text("manifest_example.json"))
    let recording = try ReplayRecording.parse(try Paths.text("replay_example.json"))
    let clock = VirtualClock()
    var machine = recording.machine
    machine.versions = [("StarEdgeBench", StarEdgeBench.version)]
    let session = BenchSession(
        tool: "StarEdge iOS \(StarEdgeBench.version)", machine: machine, proto: .paperIPhone, rewrite: manifest.rewrite,
        runner: ProtocolRunner(loop: TimingLoop(clock: clock, cpuClock: nil)), now: { "2026-12-01T00:00:00Z" })
    var doc = try session.run(models: manifest.models, units: [.all, .cpuOnly],
                              provider: ReplayProvider(recording: recording, clock: clock))
    doc.notes.append(recording.note)
    return doc
}
