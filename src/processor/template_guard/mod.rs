//! Bounds on the values a chat template builds.
//!
//! minijinja's fuel charges for most of a template's work, but some values grow without being
//! charged before they exist: a list concatenation (`l + l`) stays lazy up to 32 levels and is then
//! materialised in one step whatever its length; `~` and the `string`, `tojson` and `pprint`
//! filters format a lazy list of any length into one string; `join`, `replace`, `indent` and
//! `format` build a result many times their input. Doubling a value costs one instruction, so
//! forty doublings reach 2⁴⁰ items within the fuel.
//!
//! minijinja offers no hook for its operators, so the template's source is rewritten before it is
//! compiled: every binary `+`, `*` and `~` becomes a call of a function that computes the size of
//! the result from the sizes of its operands, refuses it past [`MAX_TEMPLATE_STRING_BYTES`] or
//! [`MAX_TEMPLATE_LIST_ITEMS`], and only then applies minijinja's own operator (so results are
//! exactly minijinja's). The growing filters and string methods are replaced by versions that
//! check their result's size the same way first. Everything else in the source is kept, token for
//! token.

use std::fmt::Write as _;
use std::sync::LazyLock;

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::limits::{MAX_TEMPLATE_LIST_ITEMS, MAX_TEMPLATE_STRING_BYTES};

mod rewrite;
pub use rewrite::bound_source;

/// The functions the rewritten operators call.
pub(super) const ADD: &str = "__bounded_add";
pub(super) const MUL: &str = "__bounded_mul";
pub(super) const CAT: &str = "__bounded_concat";

/// minijinja's own operators, applied once the sizes are checked.
static OPERATORS: LazyLock<Environment<'static>> = LazyLock::new(Environment::new);
static ADD_EXPR: LazyLock<minijinja::Expression<'static, 'static>> =
    LazyLock::new(|| OPERATORS.compile_expression("a + b").expect("valid"));
static MUL_EXPR: LazyLock<minijinja::Expression<'static, 'static>> =
    LazyLock::new(|| OPERATORS.compile_expression("a * b").expect("valid"));
static CAT_EXPR: LazyLock<minijinja::Expression<'static, 'static>> =
    LazyLock::new(|| OPERATORS.compile_expression("a ~ b").expect("valid"));

/// The error a refused value gives: it names the limit, and the renderer reports it as is.
fn too_large(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what} would exceed the template value limit ({MAX_TEMPLATE_STRING_BYTES} bytes of \
             string, {MAX_TEMPLATE_LIST_ITEMS} list items)"
        ),
    )
}

/// The marker that tells the renderer a value limit refused the template.
pub const REFUSED: &str = "would exceed the template value limit";

/// Registers the bounded operators, filters and string methods.
pub fn install(env: &mut Environment<'_>) {
    env.add_function(ADD, bounded_add);
    env.add_function(MUL, bounded_mul);
    env.add_function(CAT, bounded_concat);
    env.add_filter("__builtin_join", minijinja::filters::join);
    env.add_filter("__builtin_format", minijinja::filters::format);
    env.add_filter("__builtin_indent", minijinja::filters::indent);
    env.add_filter("join", bounded_join);
    env.add_filter("format", bounded_format);
    env.add_filter("string", bounded_string);
    env.add_filter("tojson", bounded_tojson);
    env.add_filter("pprint", bounded_pprint);
    env.add_filter("indent", bounded_indent);
    env.add_filter("replace", bounded_replace);
    env.set_unknown_method_callback(bounded_method);
}

/// Counts formatted bytes, failing once they pass the string limit.
struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        if self.0 > MAX_TEMPLATE_STRING_BYTES {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// The length of a value's string form (`~`, `string`), or `None` past the string limit; a lazy
/// sequence is walked only until the limit.
fn text_len(v: &Value) -> Option<usize> {
    if let Some(s) = v.as_str() {
        return (s.len() <= MAX_TEMPLATE_STRING_BYTES).then_some(s.len());
    }
    let mut c = Counter(0);
    write!(c, "{v}").ok().map(|_| c.0)
}

fn is_sequence(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// A sequence's length, counting a lazy one only up to the item limit (`None` past it).
fn items(v: &Value) -> Option<usize> {
    if let Some(n) = v.len() {
        return (n <= MAX_TEMPLATE_LIST_ITEMS).then_some(n);
    }
    let mut n = 0usize;
    for _ in v.try_iter().ok()? {
        n += 1;
        if n > MAX_TEMPLATE_LIST_ITEMS {
            return None;
        }
    }
    Some(n)
}

fn eval(
    expr: &minijinja::Expression<'static, 'static>,
    a: Value,
    b: Value,
) -> Result<Value, Error> {
    expr.eval(minijinja::context! { a => a, b => b })
}

fn bounded_add(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        if x.len() + y.len() > MAX_TEMPLATE_STRING_BYTES {
            return Err(too_large("`+` of two strings"));
        }
    } else if is_sequence(&a) && is_sequence(&b) {
        let n = match (items(&a), items(&b)) {
            (Some(x), Some(y)) if x + y <= MAX_TEMPLATE_LIST_ITEMS => x + y,
            _ => return Err(too_large("`+` of two lists")),
        };
        // Walking a concatenation costs about one step per item and nesting level, and minijinja
        // copies it whole every 32 levels: charge a fuel per item, so that appending to a list
        // item by item (quadratic work) stays within the fuel's time bound.
        state.consume_fuel(n as u64)?;
    }
    eval(&ADD_EXPR, a, b)
}

fn bounded_mul(a: Value, b: Value) -> Result<Value, Error> {
    let (seq, n) = if a.as_i64().is_some() {
        (&b, &a)
    } else {
        (&a, &b)
    };
    let count = n.as_i64().unwrap_or(0).max(0) as u128;
    if let Some(s) = seq.as_str() {
        if s.len() as u128 * count > MAX_TEMPLATE_STRING_BYTES as u128 {
            return Err(too_large("`*` of a string"));
        }
    } else if matches!(seq.kind(), ValueKind::Seq | ValueKind::Iterable) {
        let len = items(seq).ok_or_else(|| too_large("`*` of a list"))?;
        if len as u128 * count > MAX_TEMPLATE_LIST_ITEMS as u128 {
            return Err(too_large("`*` of a list"));
        }
    }
    eval(&MUL_EXPR, a, b)
}

fn bounded_concat(a: Value, b: Value) -> Result<Value, Error> {
    match (text_len(&a), text_len(&b)) {
        (Some(x), Some(y)) if x + y <= MAX_TEMPLATE_STRING_BYTES => eval(&CAT_EXPR, a, b),
        _ => Err(too_large("`~`")),
    }
}

/// The length `join` gives items joined by `sep`, checked against the limit.
fn check_join(list: &Value, sep: usize) -> Result<(), Error> {
    let mut total = 0usize;
    let mut n = 0usize;
    for item in list.try_iter()? {
        n += 1;
        total = total
            .saturating_add(text_len(&item).unwrap_or(usize::MAX))
            .saturating_add(sep);
        if total > MAX_TEMPLATE_STRING_BYTES || n > MAX_TEMPLATE_LIST_ITEMS {
            return Err(too_large("`join`"));
        }
    }
    Ok(())
}

fn bounded_join(state: &mut State, args: Rest<Value>) -> Result<Value, Error> {
    let sep = args.get(1).and_then(Value::as_str).map_or(0, str::len);
    if let Some(list) = args.first() {
        if !list.is_undefined() {
            check_join(list, sep)?;
        }
    }
    state.apply_filter("__builtin_join", &args)
}

/// The largest size a printf- or `str.format`-style format can give: every field at most the
/// longest argument plus the largest width written in the format.
fn check_format(fmt: &str, args: &[Value], field: char) -> Result<(), Error> {
    let longest = args
        .iter()
        .map(|a| text_len(a).unwrap_or(usize::MAX))
        .max()
        .unwrap_or(0);
    let widest = fmt
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    let fields = fmt.matches(field).count();
    let bound = fields
        .saturating_mul(longest.saturating_add(widest))
        .saturating_add(fmt.len());
    if bound > MAX_TEMPLATE_STRING_BYTES {
        return Err(too_large("`format`"));
    }
    Ok(())
}

fn bounded_format(state: &mut State, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(fmt) = args.first().and_then(Value::as_str) {
        check_format(fmt, &args[1..], '%')?;
    }
    state.apply_filter("__builtin_format", &args)
}

fn bounded_string(state: &State, v: Value) -> Result<Value, Error> {
    text_len(&v).ok_or_else(|| too_large("`string`"))?;
    minijinja::filters::string(state, &v)
}

/// Counts the bytes of `tojson`'s output (`<`, `>`, `&` and `'` become six-byte escapes).
struct JsonCounter(usize);

impl std::io::Write for JsonCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let escapes = buf.iter().filter(|b| b"<>&'".contains(b)).count();
        self.0 += buf.len() + 5 * escapes;
        if self.0 > MAX_TEMPLATE_STRING_BYTES {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bounded_tojson(v: Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let mut c = JsonCounter(0);
    // `indent=true` is two spaces.
    let n = indent.as_ref().and_then(|v| {
        v.as_usize()
            .or_else(|| (v.kind() == ValueKind::Bool && v.is_true()).then_some(2))
    });
    if let Some(n) = n {
        let pad = " ".repeat(n.min(MAX_TEMPLATE_STRING_BYTES));
        let pretty = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
        let _ = serde::Serialize::serialize(
            &v,
            &mut serde_json::Serializer::with_formatter(&mut c, pretty),
        );
    } else {
        let _ = serde_json::to_writer(&mut c, &v);
    }
    let size = c.0;
    // Other serialization errors are the filter's own to report.
    if size > MAX_TEMPLATE_STRING_BYTES {
        return Err(too_large("`tojson`"));
    }
    minijinja::filters::tojson(&v, indent, kwargs)
}

fn bounded_pprint(v: Value) -> Result<String, Error> {
    let mut c = Counter(0);
    write!(c, "{v:#?}").map_err(|_| too_large("`pprint`"))?;
    Ok(minijinja::filters::pprint(&v))
}

fn bounded_indent(state: &mut State, args: Rest<Value>) -> Result<Value, Error> {
    // `indent(width=4, first=false, blank=false)`; the width may be a string of spaces.
    let width = args
        .get(1)
        .filter(|v| v.kind() != ValueKind::Map)
        .cloned()
        .or_else(|| {
            args.iter()
                .find(|v| v.kind() == ValueKind::Map)
                .and_then(|k| k.get_attr("width").ok())
                .filter(|v| !v.is_undefined())
        });
    let w = match &width {
        Some(v) => v
            .as_str()
            .map_or_else(|| v.as_usize().unwrap_or(0), str::len),
        None => 4,
    };
    if let Some(s) = args.first() {
        let len = text_len(s).ok_or_else(|| too_large("`indent`"))?;
        let lines = s.as_str().map_or(1, |s| s.matches('\n').count() + 1);
        if lines.saturating_mul(w).saturating_add(len) > MAX_TEMPLATE_STRING_BYTES {
            return Err(too_large("`indent`"));
        }
    }
    state.apply_filter("__builtin_indent", &args)
}

/// `s` with `old` replaced by `new` (at most `count` times), if that fits in the limit.
fn checked_replace(s: &str, old: &str, new: &str, count: Option<usize>) -> Result<String, Error> {
    let mut hits = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old).count()
    };
    if let Some(c) = count {
        hits = hits.min(c);
    }
    let grown = new.len().saturating_sub(old.len()).saturating_mul(hits);
    if s.len().saturating_add(grown) > MAX_TEMPLATE_STRING_BYTES {
        return Err(too_large("`replace`"));
    }
    Ok(match count {
        Some(c) => s.replacen(old, new, c),
        None => s.replace(old, new),
    })
}

fn bounded_replace(
    s: Value,
    old: String,
    new: String,
    count: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let count = match count.or(kwargs.get::<Option<Value>>("count")?) {
        Some(c) if !c.is_none() => Some(c.as_i64().unwrap_or(-1)),
        _ => None,
    };
    kwargs.assert_all_used()?;
    let text = s.to_string();
    // A negative count replaces every occurrence, as in Python.
    let out = checked_replace(
        &text,
        &old,
        &new,
        count.and_then(|c| usize::try_from(c).ok()),
    )?;
    Ok(if s.is_safe() {
        Value::from_safe_string(out)
    } else {
        Value::from(out)
    })
}

/// Python's string methods (minijinja-contrib's `pycompat`), with `join`, `replace` and `format`
/// checked first.
fn bounded_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "join" => {
                if let Some(list) = args.first() {
                    check_join(list, s.len())?;
                }
            }
            "replace" => {
                if let (Some(old), Some(new)) = (
                    args.first().and_then(Value::as_str),
                    args.get(1).and_then(Value::as_str),
                ) {
                    let count = args.get(2).and_then(Value::as_i64);
                    let count = count.and_then(|c| usize::try_from(c).ok());
                    return checked_replace(s, old, new, count).map(Value::from);
                }
            }
            "format" => check_format(s, args, '{')?,
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(bounded: bool) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .unwrap(),
        );
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        if bounded {
            install(&mut env);
        }
        env
    }

    fn render(src: &str, bounded: bool) -> Result<String, String> {
        let mut env = env(bounded);
        let src = if bounded {
            bound_source(src)?
        } else {
            src.to_string()
        };
        env.add_template_owned("chat", src)
            .map_err(|e| e.to_string())?;
        let messages = serde_json::json!([
            {"role": "system", "content": "Be brief & <kind>."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What's this?"}]},
            {"role": "assistant", "content": "A cat.\nOn a mat."},
            {"role": "user", "content": "Why?"}
        ]);
        let tools = serde_json::json!([{"name": "f", "parameters": {"x": 1}}, {"name": "g"}]);
        env.get_template("chat")
            .unwrap()
            .render(minijinja::context! {
                messages => minijinja::value::Serde(&messages),
                tools => minijinja::value::Serde(&tools),
                add_generation_prompt => true,
                bos_token => "<s>",
                eos_token => "</s>",
            })
            .map_err(|e| e.to_string())
    }

    /// Templates in the styles of published chat templates render exactly as without the bounds.
    #[test]
    fn real_templates_render_unchanged() {
        let templates = [
            "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}",
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + (message['content'] if message['content'] is string else message['content'][1]['text']) + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
            "{{- bos_token }}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if tools is not none %}\n    {{- \"Tools: \" ~ tools|length ~ \"\\n\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ (message['content'] if message['content'] is string else '') | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
            "{%- set ns = namespace(system='', names=[], count=0) -%}{%- for m in messages -%}{%- if m.role == 'system' -%}{%- set ns.system = ns.system ~ m.content -%}{%- endif -%}{%- set ns.names = ns.names + [m.role] -%}{%- set ns.count = ns.count + 1 * 2 - 1 -%}{%- endfor -%}[{{ ns.system }}] {{ ns.names|join(', ') }} {{ ns.count }} {{ ns.names|unique|list }} {{ (ns.names * 2)|length }} {{ '-' * 3 }} {{ 2 ** 3 // 3 % 2 }} {{ -ns.count + 10 }}",
            "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 1) and loop.index0 > 0 %}{{ raise_exception('x') if false else '' }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + (message['content'] if message['content'] is string else 'img') + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] ~ eos_token }}{% endif %}{% endfor %}",
            "{% macro render(m, depth=0) -%}{{ '  ' * depth }}{{ m.role|upper }}:{{ (m.content is string) and m.content|replace('\\n', ' ')|indent(2) or '[parts]' }}{%- endmacro %}{% for m in messages %}{{ render(m, depth=loop.index % 3) }}\n{% endfor %}{{ '%s-%d'|format('a', 3) }} {{ '{}+{}'.format(1, 'b') }} {{ 'x,y'.split(',')|join('|') }} {{ tools|map(attribute='name')|join }} {{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ {'a': 1 + 1, 'b': [1, 2][0:1]}|tojson }} {{ messages[-1].content|string }} {{ range(3)|list + [3] }}",
            "{% set x = 'a' 'b' %}{{ x }}{% with y = x ~ 'c' %}{{ y }}{% endwith %}{% for k, v in {'p': 1}|items %}{{ k ~ v }}{% endfor %}{% for i in range(5) if i is odd %}{{ i }}{% else %}none{% endfor %}{% filter upper %}abc{{ 1 + 2 }}{% endfilter %}{% set z %}{{ 'q' * 2 }}{% endset %}{{ z }}{{ 'x' if 1 + 1 == 2 else 'y' }}{{ 3 is divisibleby 3 }}{{ not 1 + 1 == 3 }}{{ 1 in [1] + [2] }}{{ 'a' not in 'b' ~ 'c' }}{{ [1, 2]|sum + 1 }}{{ messages|length - 1 }}{{ (1, 2) + (3,) }}{{ 1.5e2 + 1_000 }}",
        ];
        for t in templates {
            let plain = render(t, false).unwrap();
            assert_eq!(render(t, true).unwrap(), plain, "{t}");
        }
    }

    #[test]
    fn values_past_the_limits_are_refused() {
        for t in [
            "{% set ns = namespace(l=['x']) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "{{ ['x'] * 100000000 }}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s]|join('') %}{% endfor %}",
            "{% macro f(x, n) %}{% if n > 0 %}{{ f(x + x, n - 1) }}{% endif %}{% endmacro %}{{ f(['x'], 40) }}",
        ] {
            let e = render(t, true).unwrap_err();
            assert!(e.contains(REFUSED), "{t}: {e}");
        }
    }
}
