// The `staredge-bench` result document (docs/bench-format.md, schema version 1), as the
// iOS app and the Mac tool write it: one machine, the protocols used, one result per
// model x compute-units setting, every run kept. `staredge bench --merge` reads it.

import Foundation
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Schema name and version of the documents this package writes.
public let benchSchemaName = "staredge-bench"
public let benchSchemaVersion = 1

/// What the numbers were measured on. Every key is optional in the format; `label` is what
/// tables show ("iPhone 13").
public struct MachineInfo: Equatable, Sendable {
    public var label: String
    /// e.g. "iOS 18.1", "macOS 15.2", "Linux".
    public var os: String
    /// `utsname.machine`: "iPhone14,5" on a phone, "arm64" on a Mac.
    public var hardware: String
    public var arch: String
    public var logicalCpus: Int?
    public var memoryBytes: UInt64?
    /// Versions of what ran the models, e.g. ["StarEdgeBench": "1.0"].
    public var versions: [(String, String)]

    public init(label: String, os: String, hardware: String, arch: String, logicalCpus: Int? = nil,
                memoryBytes: UInt64? = nil, versions: [(String, String)] = []) {
        self.label = label
        self.os = os
        self.hardware = hardware
        self.arch = arch
        self.logicalCpus = logicalCpus
        self.memoryBytes = memoryBytes
        self.versions = versions
    }

    public static func == (a: MachineInfo, b: MachineInfo) -> Bool { a.toJSON() == b.toJSON() }

    /// The machine this code runs on; `label` defaults to a readable device name.
    public static func current(label: String? = nil) -> MachineInfo {
        let (hardware, release) = unameFields()
        let info = ProcessInfo.processInfo
        let v = info.operatingSystemVersion
        let version = "\(v.majorVersion).\(v.minorVersion)" + (v.patchVersion > 0 ? ".\(v.patchVersion)" : "")
        #if os(iOS)
        let osName = "iOS \(version)"
        #elseif os(macOS)
        let osName = "macOS \(version)"
        #elseif os(Linux)
        let osName = "Linux \(release)"
        #else
        let osName = "unknown \(version)"
        #endif
        #if arch(arm64)
        let arch = "arm64"
        #elseif arch(x86_64)
        let arch = "x86_64"
        #else
        let arch = hardware
        #endif
        return MachineInfo(label: label ?? deviceName(hardware: hardware), os: osName, hardware: hardware, arch: arch,
                           logicalCpus: info.processorCount, memoryBytes: info.physicalMemory)
    }

    /// "iPhone 13" for "iPhone14,5" (a table of recent iPhones), else the identifier itself.
    public static func deviceName(hardware: String) -> String {
        let known: [String: String] = [
            "iPhone13,1": "iPhone 12 mini", "iPhone13,2": "iPhone 12", "iPhone13,3": "iPhone 12 Pro",
            "iPhone13,4": "iPhone 12 Pro Max", "iPhone14,4": "iPhone 13 mini", "iPhone14,5": "iPhone 13",
            "iPhone14,2": "iPhone 13 Pro", "iPhone14,3": "iPhone 13 Pro Max", "iPhone14,6": "iPhone SE (3rd generation)",
            "iPhone14,7": "iPhone 14", "iPhone14,8": "iPhone 14 Plus", "iPhone15,2": "iPhone 14 Pro",
            "iPhone15,3": "iPhone 14 Pro Max", "iPhone15,4": "iPhone 15", "iPhone15,5": "iPhone 15 Plus",
            "iPhone16,1": "iPhone 15 Pro", "iPhone16,2": "iPhone 15 Pro Max", "iPhone17,3": "iPhone 16",
            "iPhone17,4": "iPhone 16 Plus", "iPhone17,1": "iPhone 16 Pro", "iPhone17,2": "iPhone 16 Pro Max",
            "iPhone17,5": "iPhone 16e",
        ]
        return known[hardware] ?? hardware
    }

    /// `uname(3)` fields as strings (their sizes differ between Darwin and glibc).
    private static func unameFields() -> (machine: String, release: String) {
        var u = utsname()
        guard uname(&u) == 0 else { return ("unknown", "") }
        func text<T>(_ field: T) -> String {
            var copy = field
            return withUnsafeBytes(of: &copy) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        return (text(u.machine), text(u.release))
    }

    /// A short stable id for the document: the label and hardware as a slug.
    public var id: String {
        let text = "\(label)-\(hardware)".lowercased()
        var slug = ""
        for ch in text.unicodeScalars {
            if CharacterSet.alphanumerics.contains(ch) && ch.isASCII { slug.unicodeScalars.append(ch) }
            else if !slug.hasSuffix("-") { slug += "-" }
        }
        while slug.hasSuffix("-") { slug.removeLast() }
        return slug.isEmpty ? "device" : slug
    }

    /// The machine record of the bench format.
    public func toJSON() -> JSONValue {
        var fields: [(String, JSONValue)] = [
            ("label", .string(label)),
            ("os", .string(os)),
            ("hardware", .string(hardware)),
            ("arch", .string(arch)),
        ]
        if let n = logicalCpus { fields.append(("logical_cpus", .int(n))) }
        if let b = memoryBytes { fields.append(("memory_bytes", .int(Int(clamping: b)))) }
        fields.append(("gpus", .array([])))
        fields.append(("versions", .object(versions.map { ($0.0, .string($0.1)) })))
        return .object(fields)
    }
}

/// One model (variant) on one compute-units setting under one protocol on one machine.
public struct BenchResultRecord: Sendable {
    public var model: String
    public var backend: String
    public var machine: String
    public var proto: String
    public var variant: String = "star"
    public var runtime: String = "coreml"
    public var device: String = "cpu"
    public var rewrites: [String] = []
    public var precision: String = "fp32"
    public var runtimeVersion: String? = nil
    public var paramsM: Double? = nil
    public var macsM: Double? = nil
    public var status: String = "ok"
    public var error: String? = nil
    public var latencyMs: Double? = nil
    public var reportedRun: Int? = nil
    public var runs: [RunStats] = []
    public var notes: [String] = []
    public var measuredUTC: String

    public init(model: String, backend: String, machine: String, proto: String, measuredUTC: String) {
        self.model = model
        self.backend = backend
        self.machine = machine
        self.proto = proto
        self.measuredUTC = measuredUTC
    }

    /// A result filled from a measurement of `units` (status, runs, reported figure).
    public static func from(_ m: Measurement, model: String, units: ComputeUnits, machine: String, proto: String,
                            measuredUTC: String) -> BenchResultRecord {
        var r = BenchResultRecord(model: model, backend: units.backend, machine: machine, proto: proto, measuredUTC: measuredUTC)
        r.device = units.device
        r.status = m.status
        r.error = m.error
        r.latencyMs = m.latencyMs
        r.reportedRun = m.reportedRun
        r.runs = m.runs
        r.notes = m.notes
        return r
    }

    /// Whether there is a latency to report (a complete or interrupted run).
    public var ok: Bool { latencyMs != nil && (status == "ok" || status == "interrupted") }

    /// The result record, keys in the Python writer's order (`speedup_vs` empty: a reader
    /// recomputes it; there are no baselines on a phone).
    public func toJSON() -> JSONValue {
        .object([
            ("model", .string(model)),
            ("backend", .string(backend)),
            ("machine", .string(machine)),
            ("protocol", .string(proto)),
            ("variant", .string(variant)),
            ("runtime", .string(runtime)),
            ("device", .string(device)),
            ("baseline", .null),
            ("rewrites", .array(rewrites.map { .string($0) })),
            ("precision", .string(precision)),
            ("threads_requested", .null),
            ("threads_in_effect", .null),
            ("runtime_version", JSONValue(runtimeVersion)),
            ("params_m", JSONValue(paramsM)),
            ("macs_m", JSONValue(macsM)),
            ("status", .string(status)),
            ("error", JSONValue(error)),
            ("latency_ms", JSONValue(latencyMs)),
            ("reported_run", JSONValue(reportedRun)),
            ("runs", .array(runs.map { $0.toJSON() })),
            ("speedup_vs", .object([])),
            ("notes", .array(notes.map { .string($0) })),
            ("measured_utc", .string(measuredUTC)),
        ])
    }
}

/// A results file: one machine, the protocols used, and the results that refer to them.
public struct BenchDocument {
    public var tool: String
    public var createdUTC: String
    public var complete: Bool = true
    public var notes: [String] = []
    public var machines: [(String, JSONValue)] = []
    public var protocols: [(String, JSONValue)] = []
    public var results: [BenchResultRecord] = []

    public init(tool: String, createdUTC: String = utcTimestamp()) {
        self.tool = tool
        self.createdUTC = createdUTC
    }

    /// Register a machine; returns its id (the same machine twice gives one entry).
    @discardableResult
    public mutating func addMachine(_ machine: MachineInfo) -> String {
        let id = machine.id
        if !machines.contains(where: { $0.0 == id }) { machines.append((id, machine.toJSON())) }
        return id
    }

    /// Register a protocol; returns its id (`name` plus overrides, as Python's `protocol_id`).
    @discardableResult
    public mutating func addProtocol(_ proto: BenchProtocol, rewrite: String = "auto") -> String {
        let id = proto.id
        if !protocols.contains(where: { $0.0 == id }) { protocols.append((id, proto.toJSON(rewrite: rewrite))) }
        return id
    }

    /// The JSON document; throws when a result points at an unregistered machine or protocol.
    public func toJSON() throws -> JSONValue {
        for r in results {
            guard machines.contains(where: { $0.0 == r.machine }) else {
                throw BenchError.format("result \(r.model)/\(r.backend) refers to unknown machine '\(r.machine)'")
            }
            guard protocols.contains(where: { $0.0 == r.proto }) else {
                throw BenchError.format("result \(r.model)/\(r.backend) refers to unknown protocol '\(r.proto)'")
            }
        }
        return .object([
            ("schema", .string(benchSchemaName)),
            ("schema_version", .int(benchSchemaVersion)),
            ("tool", .string(tool)),
            ("created_utc", .string(createdUTC)),
            ("complete", .bool(complete)),
            ("notes", .array(notes.map { .string($0) })),
            ("machines", .object(machines)),
            ("protocols", .object(protocols)),
            ("results", .array(results.map { $0.toJSON() })),
        ])
    }

    /// Pretty JSON text (two-space indent, trailing newline), as `staredge bench` writes.
    public func jsonText() throws -> String { try toJSON().serialized(indent: 2) + "\n" }

    /// Write atomically (a temporary file in the same folder, then a rename). An existing
    /// file is replaced only with `force`.
    public func write(to url: URL, force: Bool = false) throws {
        try writeFileAtomically(Data(try jsonText().utf8), to: url, force: force)
    }
}

/// Write `data` to `url` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file; an existing file is an error unless `force`.
public func writeFileAtomically(_ data: Data, to url: URL, force: Bool) throws {
    let fm = FileManager.default
    if fm.fileExists(atPath: url.path) && !force {
        throw BenchError.io("\(url.path) exists; pass --force to overwrite it")
    }
    let folder = url.deletingLastPathComponent()
    do {
        try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        let tmp = folder.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        try data.write(to: tmp)
        if fm.fileExists(atPath: url.path) {
            _ = try fm.replaceItemAt(url, withItemAt: tmp)
        } else {
            try fm.moveItem(at: tmp, to: url)
        }
    } catch let error as BenchError {
        throw error
    } catch {
        throw BenchError.io("cannot write \(url.path): \(error.localizedDescription)")
    }
}

/// The current UTC time as ISO 8601 with a trailing Z, to the second.
public func utcTimestamp(_ date: Date = Date()) -> String {
    var t = time_t(date.timeIntervalSince1970.rounded(.down))
    var parts = tm()
    gmtime_r(&t, &parts)
    func pad(_ v: Int32, _ width: Int = 2) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1))-\(pad(parts.tm_mday))T"
        + "\(pad(parts.tm_hour)):\(pad(parts.tm_min)):\(pad(parts.tm_sec))Z"
}
