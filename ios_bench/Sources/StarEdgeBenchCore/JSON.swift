// A small JSON value with ordered object keys, a writer whose layout is that of Python's
// json.dumps(indent=2) (so a document from this package reads like one from `staredge
// bench`), and a strict parser. Foundation's JSONSerialization is not used: its number
// types differ between Apple platforms and Linux, and it does not keep key order.

/// A JSON value. Objects keep their keys in insertion order.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// `.double(v)` or `.null` when `v` is nil.
    public init(_ value: Double?) { self = value.map { .double($0) } ?? .null }
    /// `.string(v)` or `.null` when `v` is nil.
    public init(_ value: String?) { self = value.map { .string($0) } ?? .null }
    /// `.int(v)` or `.null` when `v` is nil.
    public init(_ value: Int?) { self = value.map { .int($0) } ?? .null }

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y || (x.isNaN && y.isNaN)
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value under `key` of an object (nil for a missing key or a non-object).
    public subscript(key: String) -> JSONValue? {
        if case let .object(fields) = self { return fields.first(where: { $0.0 == key })?.1 }
        return nil
    }

    /// A number as Double (ints widened), else nil.
    public var doubleValue: Double? {
        switch self {
        case let .double(v): return v
        case let .int(v): return Double(v)
        default: return nil
        }
    }

    /// An integer (a double with an integral value is accepted), else nil.
    public var intValue: Int? {
        switch self {
        case let .int(v): return v
        case let .double(v) where v.rounded() == v && abs(v) < 9.0e15: return Int(v)
        default: return nil
        }
    }

    public var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    public var arrayValue: [JSONValue]? { if case let .array(a) = self { return a } else { return nil } }
    public var objectValue: [(String, JSONValue)]? { if case let .object(o) = self { return o } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }

    // MARK: writing

    /// JSON text; `indent` > 0 lays it out like Python's `json.dumps(indent=indent)`.
    /// Non-ASCII characters are escaped (`\uXXXX`), non-finite numbers become null.
    public func serialized(indent: Int = 2) -> String {
        var out = ""
        write(into: &out, indent: indent, level: 0)
        return out
    }

    private func write(into out: inout String, indent: Int, level: Int) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d): out += JSONValue.formatDouble(d)
        case let .string(s): JSONValue.writeString(s, into: &out)
        case let .array(items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                JSONValue.newline(&out, indent: indent, level: level + 1)
                item.write(into: &out, indent: indent, level: level + 1)
            }
            JSONValue.newline(&out, indent: indent, level: level)
            out += "]"
        case let .object(fields):
            if fields.isEmpty { out += "{}"; return }
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                JSONValue.newline(&out, indent: indent, level: level + 1)
                JSONValue.writeString(key, into: &out)
                out += ": "
                value.write(into: &out, indent: indent, level: level + 1)
            }
            JSONValue.newline(&out, indent: indent, level: level)
            out += "}"
        }
    }

    private static func newline(_ out: inout String, indent: Int, level: Int) {
        if indent > 0 {
            out += "\n" + String(repeating: " ", count: indent * level)
        } else if level > 0 {
            out += " "
        }
    }

    /// The shortest text that reads back as `d`, laid out as Python's `repr` does (fixed
    /// notation for 1e-4 <= |d| < 1e16 with at least one decimal, else `1e-05` style), so
    /// a number is written with the same characters by both languages.
    public static func formatDouble(_ d: Double) -> String {
        guard d.isFinite else { return "null" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description has the shortest round-trip digits; only the layout differs.
        var text = Substring(abs(d).description)
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...]) ?? 0
            text = text[..<e]
        }
        var digits = ""
        var pointAt = text.count
        for (i, ch) in text.enumerated() {
            if ch == "." { pointAt = i } else { digits.append(ch) }
        }
        var decpt = pointAt + exponent
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); decpt -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let sign = d < 0 ? "-" : ""
        if decpt > -4 && decpt <= 16 {
            if decpt <= 0 { return sign + "0." + String(repeating: "0", count: -decpt) + digits }
            if decpt >= digits.count { return sign + digits + String(repeating: "0", count: decpt - digits.count) + ".0" }
            let cut = digits.index(digits.startIndex, offsetBy: decpt)
            return sign + digits[..<cut] + "." + digits[cut...]
        }
        let e = decpt - 1
        let mantissa = digits.count > 1 ? String(digits.first!) + "." + digits.dropFirst() : digits
        let exponentText = String(abs(e))
        return sign + mantissa + "e" + (e < 0 ? "-" : "+") + (exponentText.count < 2 ? "0" : "") + exponentText
    }

    private static func writeString(_ s: String, into out: inout String) {
        out += "\""
        for unit in s.unicodeScalars {
            switch unit {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if unit.value < 0x20 || unit.value > 0x7E {
                    if unit.value > 0xFFFF {
                        let v = unit.value - 0x10000
                        out += hex4(0xD800 + (v >> 10)) + hex4(0xDC00 + (v & 0x3FF))
                    } else {
                        out += hex4(unit.value)
                    }
                } else {
                    out.unicodeScalars.append(unit)
                }
            }
        }
        out += "\""
    }

    private static func hex4(_ v: UInt32) -> String {
        let digits = String(v, radix: 16)
        return "\\u" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    // MARK: parsing

    /// Parse JSON text; throws `BenchError.format` with the byte offset of the problem.
    public static func parse(_ text: String) throws -> JSONValue {
        var parser = Parser(bytes: Array(text.utf8))
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.pos == parser.bytes.count else { throw parser.fail("unexpected text after the JSON value") }
        return value
    }

    private struct Parser {
        let bytes: [UInt8]
        var pos = 0

        func fail(_ message: String) -> BenchError { .format("invalid JSON at byte \(pos): \(message)") }

        mutating func skipSpace() {
            while pos < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[pos]) { pos += 1 }
        }

        mutating func expect(_ literal: String) throws {
            let lit = Array(literal.utf8)
            guard pos + lit.count <= bytes.count, Array(bytes[pos..<(pos + lit.count)]) == lit else {
                throw fail("expected \(literal)")
            }
            pos += lit.count
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < 256 else { throw fail("nesting deeper than 256") }
            guard pos < bytes.count else { throw fail("unexpected end of text") }
            switch bytes[pos] {
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                pos += 1
                var items: [JSONValue] = []
                skipSpace()
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard pos < bytes.count else { throw fail("unterminated array") }
                    if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                    if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                    throw fail("expected , or ] in an array")
                }
            case UInt8(ascii: "{"):
                pos += 1
                var fields: [(String, JSONValue)] = []
                skipSpace()
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(fields) }
                while true {
                    skipSpace()
                    guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                    let key = try string()
                    skipSpace()
                    guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected :") }
                    pos += 1
                    skipSpace()
                    let v = try value(depth: depth + 1)
                    if let i = fields.firstIndex(where: { $0.0 == key }) { fields[i].1 = v } else { fields.append((key, v)) }
                    skipSpace()
                    guard pos < bytes.count else { throw fail("unterminated object") }
                    if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                    if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(fields) }
                    throw fail("expected , or } in an object")
                }
            default:
                return try number()
            }
        }

        mutating func number() throws -> JSONValue {
            let start = pos
            var isFloat = false
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            while pos < bytes.count {
                let c = bytes[pos]
                if c >= 0x30 && c <= 0x39 {
                    pos += 1
                } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                            || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") {
                    isFloat = true
                    pos += 1
                } else {
                    break
                }
            }
            let text = String(decoding: bytes[start..<pos], as: UTF8.self)
            guard !text.isEmpty, text != "-" else { throw fail("unexpected character") }
            if !isFloat, let i = Int(text) { return .int(i) }
            guard let d = Double(text), d.isFinite else { throw fail("bad number \(text)") }
            return .double(d)
        }

        mutating func hexQuad() throws -> UInt32 {
            guard pos + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[pos..<(pos + 4)], as: UTF8.self), radix: 16) else {
                throw fail("bad \\u escape")
            }
            pos += 4
            return v
        }

        mutating func string() throws -> String {
            pos += 1  // opening quote
            var out = String.UnicodeScalarView()
            var runStart = pos
            func flush(_ upTo: Int) {
                if upTo > runStart { out.append(contentsOf: String(decoding: bytes[runStart..<upTo], as: UTF8.self).unicodeScalars) }
            }
            while pos < bytes.count {
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") {
                    flush(pos)
                    pos += 1
                    return String(out)
                }
                if c < 0x20 { throw fail("control character in a string") }
                if c == UInt8(ascii: "\\") {
                    flush(pos)
                    pos += 1
                    guard pos < bytes.count else { break }
                    let e = bytes[pos]
                    pos += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append("\"")
                    case UInt8(ascii: "\\"): out.append("\\")
                    case UInt8(ascii: "/"): out.append("/")
                    case UInt8(ascii: "b"): out.append("\u{08}")
                    case UInt8(ascii: "f"): out.append("\u{0C}")
                    case UInt8(ascii: "n"): out.append("\n")
                    case UInt8(ascii: "r"): out.append("\r")
                    case UInt8(ascii: "t"): out.append("\t")
                    case UInt8(ascii: "u"):
                        var code = try hexQuad()
                        if code >= 0xD800 && code < 0xDC00, pos + 6 <= bytes.count,
                           bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                            pos += 2
                            let low = try hexQuad()
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        }
                        out.append(Unicode.Scalar(code) ?? "\u{FFFD}")
                    default: throw fail("bad escape")
                    }
                    runStart = pos
                    continue
                }
                pos += 1
            }
            throw fail("unterminated string")
        }
    }
}
