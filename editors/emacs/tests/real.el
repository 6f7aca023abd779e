;;; real.el --- gpo.el and eglot against the real `gpo lsp', in batch  -*- lexical-binding: t; -*-

;;; Commentary:

;; A prompt with a broken frontmatter gets its diagnostic at its line
;; through Flymake; once fixed and saved, it is re-scored (the hover
;; shows the scores), optimized to the end, previewed, and the
;; suggestion is applied with eglot's own code action (eglot 1.9 never
;; resolves, so the action must carry its edit), then again with
;; `gpo-apply', and saved; saving an example file is reported to the
;; server.  tests/test_emacs_real.py runs it and checks
;; the file on disk:
;;
;;   GPO_TEST_DIR=... GPO_TEST_PYTHON=... /usr/bin/emacs -Q --batch \
;;     -L <eglot's folder> -l editors/emacs/tests/real.el
;;
;; Exits 0 after "all checks passed", else 1 with the failures (and
;; the tail of eglot's events) on stderr.

;;; Code:

(require 'cl-lib)
(require 'subr-x)

(defconst gpo-test-here
  (file-name-directory (or load-file-name buffer-file-name)))
(load (expand-file-name "../gpo.el" gpo-test-here) nil t)
(require 'eglot)
(require 'flymake)

(defvar gpo-test-wait 90 "Seconds to wait for the server or the daemon.")
(defvar gpo-test-failures nil)

(defvar gpo-test-start (float-time) "When the script started.")

(defun gpo-test-log (format-string &rest args)
  "Log FORMAT-STRING with ARGS on stderr, with the seconds since start."
  (message "[%6.2f] %s" (- (float-time) gpo-test-start)
           (apply #'format format-string args)))

(defun gpo-test-check (condition description)
  "Record DESCRIPTION as a failure unless CONDITION; return CONDITION."
  (if condition
      (gpo-test-log "ok: %s" description)
    (gpo-test-log "FAILED: %s" description)
    (push description gpo-test-failures))
  condition)

(defun gpo-test-until (predicate &optional seconds step)
  "Wait for PREDICATE to return non-nil, at most SECONDS; return its value.
Polls every STEP seconds, serving process output and timers meanwhile."
  (let ((deadline (+ (float-time) (or seconds gpo-test-wait)))
        value)
    (while (and (not (setq value (funcall predicate)))
                (< (float-time) deadline))
      (accept-process-output nil (or step 0.05)))
    value))

(defun gpo-test-events ()
  "The tail of the eglot events buffer and the server's stderr."
  (let ((server (ignore-errors (eglot-current-server))))
    (concat
     (when-let ((events (and server (jsonrpc-events-buffer server))))
       (with-current-buffer events
         (buffer-substring-no-properties (max (point-min) (- (point-max) 6000))
                                         (point-max))))
     (when-let ((stderr (and server (jsonrpc-stderr-buffer server))))
       (with-current-buffer stderr
         (concat "\n--- server stderr:\n"
                 (buffer-substring-no-properties
                  (max (point-min) (- (point-max) 4000)) (point-max))))))))

(defun gpo-test-finish ()
  "Exit: 0 when every check passed, else 1 with the failures on stderr."
  (if gpo-test-failures
      (progn
        (message "--- eglot events (tail):\n%s" (or (ignore-errors (gpo-test-events)) ""))
        (message "FAILED:\n  %s" (string-join (reverse gpo-test-failures) "\n  "))
        (kill-emacs 1))
    (message "emacs with gpo lsp: all checks passed")
    (kill-emacs 0)))

(defun gpo-test-diagnostics (type)
  "The buffer's Flymake diagnostics of TYPE (eglot-error, eglot-note...)."
  (cl-remove-if-not (lambda (d) (eq (flymake-diagnostic-type d) type))
                    (flymake-diagnostics)))

(defun gpo-test-hover (line column)
  "The hover text at LINE (1-based) and COLUMN, through eglot's ElDoc function."
  (goto-char (point-min))
  (forward-line (1- line))
  (move-to-column column)
  (let (answer)
    (eglot-hover-eldoc-function (lambda (info &rest _) (setq answer (or info ""))))
    (gpo-test-until (lambda () answer) 20)))

(defun gpo-test-actions ()
  "Eglot's code actions for the whole buffer (eglot 1.9: a list of plists)."
  (eglot-code-actions (point-min) (point-max)))

(defun gpo-test-titles (actions)
  "The titles of ACTIONS."
  (mapcar (lambda (a) (plist-get a :title)) actions))

(defun gpo-test-main ()
  "Run every check in order."
  (let* ((dir (or (getenv "GPO_TEST_DIR") (error "GPO_TEST_DIR is not set")))
         (file (expand-file-name "ws/capitals.prompt" dir))
         (python (or (getenv "GPO_TEST_PYTHON") (error "GPO_TEST_PYTHON is not set"))))
    (gpo-test-check (equal gpo-server-command '("gpo" "lsp"))
                    "gpo-server-command defaults to gpo lsp")
    (gpo-test-check (assoc '(dotprompt-mode :language-id "dotprompt") eglot-server-programs)
                    "dotprompt-mode registered in eglot-server-programs")
    (setq gpo-server-command (list python "-m" "gpo_server.cli" "lsp")
          gpo-settings '(:budget (:initial 30 :final 10)))

    ;; Open the broken prompt: dotprompt-mode starts eglot after the command.
    (find-file file)
    (gpo-test-check (eq major-mode 'dotprompt-mode) "dotprompt-mode for .prompt")
    (run-hooks 'post-command-hook)  ; where eglot-ensure connects
    (unless (gpo-test-check (gpo-test-until (lambda () (eglot-managed-p)))
                            "eglot manages the buffer")
      (gpo-test-finish))
    (gpo-test-check (with-current-buffer (jsonrpc-events-buffer (eglot-current-server))
                      (save-excursion
                        (goto-char (point-min))
                        (re-search-forward (concat ":initializationOptions[ \t\n]*"
                                                   "(:budget[ \t\n]*(:initial 30 :final 10))")
                                           nil t)))
                    "gpo-settings sent as initializationOptions")
    (flymake-start)
    (let ((problem (car (gpo-test-until (lambda () (gpo-test-diagnostics 'eglot-error))))))
      (when (gpo-test-check problem "a diagnostic for the broken frontmatter")
        (gpo-test-check (= (line-number-at-pos (flymake-diagnostic-beg problem)) 5)
                        (format "the error is on line 5, got %d: %s"
                                (line-number-at-pos (flymake-diagnostic-beg problem))
                                (flymake-diagnostic-text problem)))
        (gpo-test-check (string-match-p "invalid YAML" (flymake-diagnostic-text problem))
                        (format "the error says why: %s"
                                (flymake-diagnostic-text problem)))))

    ;; Fix it and save: the error goes.
    (goto-char (point-min))
    (forward-line 4)
    (delete-region (point) (line-end-position))
    (insert "gpo.candidates: 2")
    (save-buffer)
    (gpo-test-check (gpo-test-until (lambda () (null (gpo-test-diagnostics 'eglot-error))))
                    "the error is gone once the frontmatter is fixed")

    ;; Re-score: the hover shows the scores of the text.
    (gpo-rescore)
    (let ((hover (gpo-test-until
                  (lambda ()
                    (let ((text (gpo-test-hover 9 1)))
                      (and text (string-match-p "dev: [*]*[0-9]" text) text)))
                  60 0.5)))
      (gpo-test-check hover (format "the hover shows the dev score: %s"
                                    (gpo-test-hover 9 1))))

    ;; Optimize to the end: the apply action, and Optimize offered again.
    (let ((job (gpo-optimize)))
      (gpo-test-check (plist-get job :job) (format "gpo-optimize started a job: %S" job)))
    (let ((finished
           (gpo-test-until
            (lambda ()
              (let ((titles (gpo-test-titles (gpo-test-actions))))
                (and (cl-some (lambda (title) (string-prefix-p "Apply GPO suggestion" title))
                              titles)
                     (member "Optimize this prompt" titles)
                     titles)))
            120 0.5)))
      (unless (gpo-test-check finished
                              (format "optimized to the end: %S"
                                      (gpo-test-titles (gpo-test-actions))))
        (gpo-test-finish))
      (gpo-test-check (cl-every (lambda (a)
                                  (member (plist-get a :kind) '("quickfix" "refactor.rewrite")))
                                (gpo-test-actions))
                      (format "eglot 1.9's kinds only: %S"
                              (mapcar (lambda (a) (plist-get a :kind)) (gpo-test-actions)))))
    (let ((hover (gpo-test-hover 9 1)))
      (gpo-test-check (string-match-p "step 2/2" hover) (format "hover at step 2/2: %s" hover))
      (gpo-test-check (string-match-p "ready: Apply GPO suggestion" hover)
                      (format "hover says the suggestion is ready: %s" hover)))
    (let ((note (car (gpo-test-until (lambda () (gpo-test-diagnostics 'eglot-note))))))
      (gpo-test-check (and note (string-match-p "GPO: \\+100 pts on dev"
                                                (flymake-diagnostic-text note)))
                      (format "the suggestion note: %s"
                              (and note (flymake-diagnostic-text note)))))

    ;; Preview, then apply with eglot's own code action (no resolve in eglot 1.9).
    (let* ((before (buffer-string))
           (frontmatter (substring before 0 (1- (gpo--frontmatter-end))))
           (suggested (gpo-preview)))
      (gpo-test-check (and suggested (string-prefix-p frontmatter suggested))
                      (format "the preview keeps the frontmatter: %S" suggested))
      (gpo-test-check (and suggested (string-match-p "Name the capital city of the country\\."
                                                     suggested))
                      "the preview has the new body")
      (let ((apply (cl-find-if (lambda (a) (equal (plist-get a :kind) "quickfix"))
                               (gpo-test-actions))))
        (gpo-test-check (plist-get apply :edit)
                        (format "the apply action carries its edit: %S" apply)))
      (eglot-code-actions (point-min) (point-max) "quickfix" t)
      (gpo-test-check (equal (buffer-string) suggested)
                      (format "eglot's code action applied the suggestion: %S"
                              (buffer-string)))
      (gpo-test-check (buffer-modified-p) "the edit is in the buffer, not yet saved")

      ;; Back to the old text, and the same through gpo-apply.
      (erase-buffer)
      (insert before)
      (gpo-test-check (string-prefix-p "Apply GPO suggestion" (or (gpo-apply) ""))
                      "gpo-apply applied the suggestion")
      (gpo-test-check (equal (buffer-string) suggested)
                      (format "gpo-apply made the suggested text: %S" (buffer-string))))
    (save-buffer)
    (gpo-test-check (not (buffer-modified-p)) "saved")
    (gpo-test-check (gpo-test-until (lambda () (null (gpo-test-diagnostics 'eglot-note))))
                    "the note goes once the suggestion is applied")
    (gpo-test-check (null (gpo-stop)) "gpo-stop: nothing to stop")

    ;; Saving an example file tells the server (it asks for no file watching).
    (let ((prompt-buffer (current-buffer))
          (events (jsonrpc-events-buffer (eglot-current-server))))
      (with-current-buffer (find-file-noselect
                            (expand-file-name "ws/capitals.examples.jsonl" dir))
        (set-buffer-modified-p t)
        (save-buffer))
      (gpo-test-check
       (gpo-test-until
        (lambda ()
          (with-current-buffer events
            (save-excursion
              (goto-char (point-min))
              (search-forward "workspace/didChangeWatchedFiles" nil t)))))
       "the example file's save is reported to the server")
      (set-buffer prompt-buffer))
    (gpo-test-finish)))

(condition-case err
    (gpo-test-main)
  (error
   (push (format "error: %s" (error-message-string err)) gpo-test-failures)
   (gpo-test-finish)))

;;; real.el ends here
