// staredge-bench-mac: the benchmark core from the command line. On a Mac it times the
// CoreML packages of a models folder; anywhere (Linux included) it can replay a recording
// of latencies through the same protocols and writer (--replay), which is how it is tested.

import Foundation
import StarEdgeBenchCore
import StarEdgeBenchCoreML

let usage = """
usage: staredge-bench-mac [options]

Time the CoreML packages listed in MODELS/manifest.json (written by `staredge ios-bundle`)
under a protocol, for each compute-units setting, and write a staredge-bench JSON that
`staredge bench --merge` reads.

options:
  --models DIR           models folder with manifest.json (default: ./Models)
  --model NAME           only this model (repeatable; default: every model in the manifest)
  --protocol NAME        modelbench (default) or ios
  --compute-units LIST   comma list of all,cpuAndGPU,cpuOnly,cpuAndNeuralEngine, or every (default: all)
  --warmup N --iters N --repeats N
                         override the protocol's counts (recorded as overrides)
  --label TEXT           machine label in the results (default: the device name)
  --out FILE             results JSON (default: print to stdout)
  --force                overwrite --out
  --keep-samples         store every timing in the JSON
  --replay FILE          replay recorded latencies (staredge-ios-replay JSON) instead of
                         running CoreML; works on any platform
  --list                 list the protocols and the models of the manifest, then exit
  -h, --help             this text
"""

struct Options {
    var models = "Models"
    var only: [String] = []
    var proto = "modelbench"
    var units = "all"
    var warmup: Int?
    var iters: Int?
    var repeats: Int?
    var label: String?
    var out: String?
    var force = false
    var keepSamples = false
    var replay: String?
    var list = false
}

func parseOptions(_ args: [String]) throws -> Options {
    var o = Options()
    var i = 0
    func value(_ flag: String) throws -> String {
        i += 1
        guard i < args.count else { throw BenchError.invalidInput("\(flag) needs a value") }
        return args[i]
    }
    func integer(_ flag: String) throws -> Int {
        let text = try value(flag)
        guard let n = Int(text) else { throw BenchError.invalidInput("\(flag) takes an integer, got '\(text)'") }
        return n
    }
    while i < args.count {
        let a = args[i]
        switch a {
        case "--models": o.models = try value(a)
        case "--model": o.only.append(try value(a))
        case "--protocol": o.proto = try value(a)
        case "--compute-units": o.units = try value(a)
        case "--warmup": o.warmup = try integer(a)
        case "--iters": o.iters = try integer(a)
        case "--repeats": o.repeats = try integer(a)
        case "--label": o.label = try value(a)
        case "--out": o.out = try value(a)
        case "--force": o.force = true
        case "--keep-samples": o.keepSamples = true
        case "--replay": o.replay = try value(a)
        case "--list": o.list = true
        case "-h", "--help": print(usage); exit(0)
        default: throw BenchError.invalidInput("unknown option '\(a)' (see --help)")
        }
        i += 1
    }
    return o
}

func fmt(_ v: Double?, _ digits: Int = 3) -> String {
    guard let v else { return "—" }
    return String(format: "%.\(digits)f", v)
}

func printTable(_ doc: BenchDocument, to handle: FileHandle) {
    var lines = ["model                  compute units         latency ms  runs  status"]
    for r in doc.results {
        let name = r.model.padding(toLength: 22, withPad: " ", startingAt: 0)
        let units = r.backend.padding(toLength: 21, withPad: " ", startingAt: 0)
        let latency = fmt(r.latencyMs).leftPadded(10)
        lines.append("\(name) \(units) \(latency)  \(String(r.runs.count).leftPadded(4))  \(r.status)\(r.error.map { ": \($0)" } ?? "")")
    }
    handle.write(Data((lines.joined(separator: "\n") + "\n").utf8))
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

/// The manifest, CoreML runner factories and this Mac's description (Apple platforms only).
func coreMLSetup(folder: URL) throws -> (BundleManifest, RunnerProvider, MachineInfo) {
    #if canImport(CoreML)
    return (try BundleManifest.load(folder: folder), CoreMLProvider(folder: folder), MachineInfo.current())
    #else
    throw BenchError.unsupported("CoreML is not available on this platform: run this on a Mac, or replay a recording with --replay FILE")
    #endif
}

func run() throws -> Int32 {
    let o = try parseOptions(Array(CommandLine.arguments.dropFirst()))
    var proto = try BenchProtocol.preset(named: o.proto)
    proto = try proto.withOverrides(warmup: o.warmup, iters: o.iters, repeats: o.repeats)
    let units = try ComputeUnits.parseList(o.units)
    let folder = URL(fileURLWithPath: o.models, isDirectory: true)
    let stderr = FileHandle.standardError

    var manifest: BundleManifest
    let provider: RunnerProvider
    var machine: MachineInfo
    var runner = ProtocolRunner(keepSamples: o.keepSamples)
    if let replayPath = o.replay {
        let text: String
        do { text = try String(contentsOfFile: replayPath, encoding: .utf8) } catch {
            throw BenchError.io("cannot read \(replayPath): \(error.localizedDescription)")
        }
        let recording = try ReplayRecording.parse(text, source: replayPath)
        let clock = VirtualClock()
        provider = ReplayProvider(recording: recording, clock: clock)
        runner.loop = TimingLoop(clock: clock, cpuClock: nil)
        machine = recording.machine
        if FileManager.default.fileExists(atPath: folder.appendingPathComponent(StarEdgeBench.manifestFileName).path) {
            manifest = try BundleManifest.load(folder: folder)
        } else {
            var seen: [String] = []
            for s in recording.series where !seen.contains(s.model) { seen.append(s.model) }
            manifest = BundleManifest(models: seen.map { BundledModel(name: $0, package: "\($0).mlpackage") })
        }
    } else {
        (manifest, provider, machine) = try coreMLSetup(folder: folder)
    }
    if let label = o.label { machine.label = label }
    machine.versions.append(("StarEdgeBench", StarEdgeBench.version))

    if o.list {
        for p in BenchProtocol.presets { print("protocol \(p.name): \(p.description)") }
        for m in manifest.models { print("model \(m.name) (\(m.variant), \(m.precision), \(m.task)): \(m.package)") }
        return 0
    }
    var models = manifest.models
    if !o.only.isEmpty {
        let unknown = o.only.filter { n in !models.contains { $0.name == n } }
        if !unknown.isEmpty {
            throw BenchError.invalidInput("not in the manifest: \(unknown.joined(separator: ", ")); known: \(models.map(\.name).joined(separator: ", "))")
        }
        models = models.filter { o.only.contains($0.name) }
    }
    guard !models.isEmpty else { throw BenchError.invalidInput("no models to time") }
    if let out = o.out, FileManager.default.fileExists(atPath: out), !o.force {
        throw BenchError.io("\(out) exists; pass --force to overwrite it")
    }

    let session = BenchSession(tool: "staredge-bench-mac \(StarEdgeBench.version)", machine: machine, proto: proto,
                               rewrite: manifest.rewrite, runner: runner)
    var lastShown = -1
    let doc = try session.run(models: models, units: units, provider: provider, progress: { p in
        let percent = Int(p.fraction * 100)
        if percent != lastShown && percent % 10 == 0 {
            lastShown = percent
            stderr.write(Data("\(percent)% \(p.model) \(p.units.backend) run \(p.run.run + 1)/\(p.run.runs)\n".utf8))
        }
    })
    printTable(doc, to: o.out == nil ? stderr : FileHandle.standardOutput)
    if let out = o.out {
        try doc.write(to: URL(fileURLWithPath: out), force: o.force)
        print("wrote \(out)")
    } else {
        print(try doc.jsonText(), terminator: "")
    }
    return doc.results.contains(where: { $0.ok }) ? 0 : 1
}

do {
    exit(try run())
} catch {
    FileHandle.standardError.write(Data("staredge-bench-mac: error: \(error)\n".utf8))
    exit(2)
}
