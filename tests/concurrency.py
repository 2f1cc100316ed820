"""Run a function from several threads at once and collect what each returned."""

import threading


def run_concurrently(worker, count: int) -> list:
    results = []
    lock = threading.Lock()

    def run():
        result = worker()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
