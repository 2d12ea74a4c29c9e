//! Issue 12 item 11, defence in depth: the users plugin's writer refuses
//! fields that would add or split lines of the account databases even when
//! a caller hands it actions no validator saw. Nothing is written then.

use std::path::Path;

use opdbus_agent::plugins::users::{apply, AccountChange, Action};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n";

fn seed(root: &Path) {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), PASSWD).unwrap();
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(
        etc.join("group"),
        "root:x:0:\nshadow:x:42:\nalice:x:1000:\n",
    )
    .unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\n").unwrap();
}

fn create(user: &str, comment: &str, home: &str, shell: &str, hash: &str) -> Action {
    Action::CreateUser {
        user: user.into(),
        uid: Some(1001),
        gid: Some(1000),
        comment: comment.into(),
        home: home.into(),
        shell: shell.into(),
        system: false,
        password_hash: hash.into(),
    }
}

fn refused(action: Action, field: &str) {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let before: Vec<Vec<u8>> = ["passwd", "shadow", "group", "gshadow"]
        .iter()
        .map(|f| std::fs::read(dir.path().join("etc").join(f)).unwrap())
        .collect();
    let shown = format!("{action:?}");
    let results = apply(dir.path(), &[action]);
    let err = match &results[0] {
        Ok(_) => panic!("{shown}: accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&format!("{field} of entry")),
        "{shown}: the error does not name the field {field}: {err}"
    );
    let after: Vec<Vec<u8>> = ["passwd", "shadow", "group", "gshadow"]
        .iter()
        .map(|f| std::fs::read(dir.path().join("etc").join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "{shown}: a database changed");
    let names: Vec<String> = std::fs::read_dir(dir.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "temp files left: {names:?}");
}

#[test]
fn writer_refuses_a_comment_with_a_line_break() {
    // the reproduction of the report: a GECOS that ends the line and adds a
    // uid-0 account with an empty password
    refused(
        create(
            "bob",
            "Bob\nevil::0:0::/root:/bin/bash",
            "/home/bob",
            "/bin/sh",
            "!",
        ),
        "comment",
    );
    refused(
        create("bob", "Bob:Admin", "/home/bob", "/bin/sh", "!"),
        "comment",
    );
}

#[test]
fn writer_refuses_bad_names_paths_and_hashes() {
    refused(create("Evil\n", "", "/home/bob", "/bin/sh", "!"), "name");
    refused(create("bob", "", "home/bob", "/bin/sh", "!"), "home");
    refused(create("bob", "", "/home/../etc", "/bin/sh", "!"), "home");
    refused(create("bob", "", "/home/bob", "/bin/sh\n", "!"), "shell");
    refused(
        create("bob", "", "/home/bob", "/bin/sh", "$6$x\nevil::0:0$y"),
        "password hash",
    );
    refused(
        Action::ModifyUser {
            user: "alice".into(),
            change: AccountChange {
                comment: Some("x\nroot2::0:0::/:/bin/sh".into()),
                ..AccountChange::default()
            },
        },
        "comment",
    );
}
