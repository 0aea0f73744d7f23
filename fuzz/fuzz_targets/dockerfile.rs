//! Dockerfiles and Dockerfile word expansion: never a panic, whatever the text.
#![no_main]
use kiln_build::{dockerfile, shell_lex};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = vec![("A".to_string(), "apple".to_string())];
    if let Ok(df) = dockerfile::parse("Dockerfile", text) {
        for ins in &df.instructions {
            for word in shell_lex::split_words(&ins.text, df.escape) {
                let _ = shell_lex::expand(&word, &vars, df.escape);
            }
        }
    }
    let _ = shell_lex::expand(text, &vars, '\\');
    let _ = shell_lex::expand_heredoc(text, &vars, '`');
});
