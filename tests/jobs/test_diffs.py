import shutil
import subprocess

import pytest

from jobs.patch.diffs import normalise_diff

# --- normalising diffs ------------------------------------------------------------------------

DIFF_A = """\
diff --git a/src/app.py b/src/app.py
index 3b18e51..a1c2d3f 100644
--- a/src/app.py
+++ b/src/app.py
@@ -10,4 +10,4 @@ class App:
     def run(self):
-        return 1
+        return 2
 
     def stop(self):
"""

DIFF_B = """\
diff --git a/src/app.py b/src/app.py
index 3b18e51..9f9e0aa 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,4 @@
+
 import os
 
 class App:
@@ -12,4 +13,4 @@ class App:
     def run(self):
-        return 1
+        return 2   
 
     def stop(self):
\\ No newline at end of file
"""


def test_equivalent_diffs_with_different_line_numbers_normalise_equal():
    assert normalise_diff(DIFF_A) == normalise_diff(DIFF_B)
    assert normalise_diff(DIFF_A) == ("diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n"
                                      "+++ b/src/app.py\n-        return 1\n+        return 2\n")


def test_different_changes_normalise_differently():
    assert normalise_diff(DIFF_A) != normalise_diff(DIFF_A.replace("+        return 2",
                                                                   "+        return 3"))


def test_a_removed_line_that_looks_like_a_file_header_stays_a_change():
    diff = "--- a/x.sql\n+++ b/x.sql\n@@ -1,2 +1,1 @@\n--- a comment\n keep\n"
    assert normalise_diff(diff) == "--- a/x.sql\n+++ b/x.sql\n--- a comment\n"


def test_whitespace_only_and_blank_only_diffs_normalise_to_nothing():
    diff = "--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n-a  \n+a\n \n+\n"
    assert normalise_diff(diff) == ""


def test_a_new_empty_file_is_kept():
    diff = "diff --git a/e b/e\nnew file mode 100644\nindex 0000000..e69de29\n"
    assert normalise_diff(diff) == "diff --git a/e b/e\nnew file mode 100644\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_real_git_diffs_of_the_same_change_compare_equal(tmp_path):
    def diff_after(name: str, prefix: str) -> str:
        root = tmp_path / name
        root.mkdir()
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
        body = "".join(f"line {n}\n" for n in range(30))
        (root / "f.py").write_text(body)
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "base"], check=True)
        (root / "f.py").write_text(prefix + body.replace("line 20\n", "line twenty\n"))
        return subprocess.run([*git, "diff"], check=True, capture_output=True, text=True).stdout

    plain, shifted = diff_after("a", ""), diff_after("b", "\n\n")
    assert plain != shifted
    assert normalise_diff(plain) == normalise_diff(shifted)
